# kiln: the two entry points are `make demo` and `make test`; both install what is missing first.
SWIFT ?= swift
KILN := .build/debug/kiln
# The build to deploy, and the one the benchmarks run: optimized, with Swift's own libraries linked
# in. A debug build's gateway spends several times the CPU it would in production, and a kiln
# linked against Swift's shared libraries spends ~10 ms of every command loading and binding
# them (`kiln run` of a missing snapshot: 20 ms vs 9.5 ms).
RELEASE_BUILD := $(SWIFT) build -c release --static-swift-stdlib
SAMPLES := examples/hello-spring examples/hello-jdk examples/hostile examples/boot-petclinic

.PHONY: setup samples build release demo test test-criu-patch fuzz lint bench-memory bench-serve soak docker-image clean

setup:            ## install CRIU 4.2.1 (built from Debian's source), runc, iptables, Java packages
	@./scripts/setup.sh

samples: setup   ## compile the Java samples with javac against Debian's jars, and kiln's CRaC agent (agent/build/kiln-crac-agent.jar)
	@for sample in $(SAMPLES); do $$sample/build.sh; done
	@agent/build.sh

build: setup
	$(SWIFT) build

release: setup    ## the release build of kiln and kiln-shim (.build/release), as the benchmarks run it
	$(RELEASE_BUILD) --product kiln-shim
	$(RELEASE_BUILD) --product kiln

demo: samples build   ## bake the Spring sample, restore it, print cold start vs restore
	@./scripts/demo.sh

lint:             ## check the Swift sources' formatting (swift format, .swift-format; `swift format -i -r -p Package.swift Sources Tests` fixes it) and that each target imports only what Package.swift lists for it
	$(SWIFT) format lint --strict -r -p Package.swift Sources Tests
	SWIFT=$(SWIFT) /usr/bin/python3 scripts/check-imports.py

test: samples lint   ## run every test (unit and integration; integration needs root)
	/usr/bin/python3 -m unittest discover -s bench/tests
	$(SWIFT) build --build-tests
	$(SWIFT) test

# make test fuzzes each parser with a 25th of its inputs (about a second); this is the long run.
fuzz:             ## the parser and routing fuzzers at full length (~180,000 inputs, ~20 s in a debug build)
	KILN_FUZZ_LONG=1 $(SWIFT) test --filter Fuzz

test-criu-patch: setup   ## patches/criu/test.sh: the patched CRIU's options (mapped pages, tmpfs listings, cgroup2 options, no breakpoints) with a C program, runc and a JVM (root)
	./patches/criu/test.sh $${CRIU:-/usr/local/sbin/criu}

bench-memory: samples build   ## 8 restored copies sharing pages vs cold starts; snapshot size with and without compaction
	@./scripts/bake-sample.sh
	$(KILN) bench memory hello --copies $${COPIES:-8}

bench-serve: samples release   ## gateway: first request at zero vs bare restore (20 trials); throughput direct, through kiln and through nginx (wrk), instance on its own core and sharing all
	@KILN=.build/release/kiln ./scripts/bake-sample.sh
	.build/release/kiln bench serve hello --trials $${TRIALS:-20} --rounds $${ROUNDS:-6} --path /greet --path /owners/1

# ~20 min: 1,000 restore/request/stop cycles (~8 min), then 10 min of gateway load with a random
# instance killed every 5 s; exits non-zero on any failed request that had not reached a killed
# instance, any failed cycle, or any leak. CYCLES=, LOAD_SECONDS= shorten it.
soak: samples release   ## reliability: restore/stop cycles, then gateway load under random kill -9; failures and leaks
	@KILN=.build/release/kiln ./scripts/bake-sample.sh
	.build/release/kiln bench soak hello --cycles $${CYCLES:-1000} --load-seconds $${LOAD_SECONDS:-600}

# Needs a running dockerd (DOCKER_HOST picks it); prints the tag, kiln:<git describe>. TAG= overrides it.
docker-image: samples   ## Docker image kiln:<version> (FROM scratch: kiln, CRIU 4.2.1, runc, JDK 17, the Spring sample)
	@./scripts/docker-image.sh $(if $(TAG),--tag $(TAG))

.PHONY: bench
bench: samples release   ## kiln vs cold JDK 17/25, AOT cache, AppCDS, bare CRIU, podman, docker (QUICK=1: ~5 min); bench/results/<time>/
	@./bench/setup.sh
	KILN=.build/release/kiln /usr/bin/python3 bench/run.py $(if $(filter 1 yes true,$(QUICK)),--quick)

clean:
	rm -rf .build $(addsuffix /build,$(SAMPLES))
