/*
 * memtest: the process that patches/criu/test.sh checkpoints and restores.
 *
 *   memtest RESULT_FILE
 *
 * Sets up memory whose content it knows (patterned pages, zero pages, pages
 * dropped with MADV_DONTNEED, a read-only and an executable region, malloc
 * heap, a sparse region of single-page runs), writes "ready" to
 * RESULT_FILE.ready and waits for SIGUSR1. test.sh dumps it and restores it;
 * on SIGUSR1 the restored process checks everything and writes one line per
 * check to RESULT_FILE ("ok NAME" or "FAIL NAME: why"), then "done", and exits.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096UL
#define R1_PAGES (64UL << 20) / PG      /* 64 MiB, eight kinds of page in turn */
#define R2_PAGES (4UL << 20) / PG       /* read-only */
#define R3_PAGES (1UL << 20) / PG       /* rwx, like a JIT code cache */
#define R6_PAGES (160UL << 20) / PG     /* every other page touched: many small runs */
#define R7_PAGES 64UL                   /* a private file mapping: even pages written, odd as in the file */
#define NBLOCKS 256
#define BLOCK (64UL << 10)
#define SEED 0x9e3779b97f4a7c15ULL

static volatile sig_atomic_t go;
static FILE *out;
static int failures;

static void on_usr1(int sig) { (void)sig; go = 1; }

static uint64_t word(uint64_t region, uint64_t page, uint64_t i) { return SEED ^ (region << 56) ^ (page << 12) ^ i; }

static void fill(uint64_t region, char *base, unsigned long page)
{
	uint64_t *w = (uint64_t *)(base + page * PG);
	for (unsigned long i = 0; i < PG / 8; i++)
		w[i] = word(region, page, i);
}

static int is_fill(uint64_t region, char *base, unsigned long page)
{
	uint64_t *w = (uint64_t *)(base + page * PG);
	for (unsigned long i = 0; i < PG / 8; i++)
		if (w[i] != word(region, page, i))
			return 0;
	return 1;
}

static int is_zero(const char *p, unsigned long len)
{
	for (unsigned long i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

static void check(int ok, const char *name, const char *fmt, unsigned long a)
{
	if (ok) {
		fprintf(out, "ok %s\n", name);
	} else {
		failures++;
		fprintf(out, "FAIL %s: ", name);
		fprintf(out, fmt, a);
		fprintf(out, "\n");
	}
	fflush(out);
}

/* The permissions /proc/self/maps shows for the mapping holding addr. */
static void perms_of(void *addr, char perms[5])
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	strcpy(perms, "????");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char p[5];
		if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3 && (unsigned long)addr >= s && (unsigned long)addr < e) {
			strcpy(perms, p);
			break;
		}
	}
	if (f)
		fclose(f);
}

/* Whether the mapping holding addr is one of a page image (pages-N.img). */
static int from_page_image(void *addr)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int found = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && (unsigned long)addr >= s && (unsigned long)addr < e) {
			found = strstr(line, "/pages-") != NULL;
			break;
		}
	}
	if (f)
		fclose(f);
	return found;
}

static unsigned long count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long n = 0;
	int c;
	while (f && (c = fgetc(f)) != EOF)
		n += c == '\n';
	if (f)
		fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	char ready[4096];
	unsigned long p, bad;
	char *blocks[NBLOCKS];

	if (argc != 2) {
		fprintf(stderr, "usage: memtest RESULT_FILE\n");
		return 2;
	}
	/* Keep the heap blocks in the brk heap, and never give it back on free. */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	mallopt(M_TRIM_THRESHOLD, 512 << 20);

	/*
	 * One reservation, carved upwards: R1, R2, R3, then R6, with a
	 * PROT_NONE page between regions so that none merge. The restorer walks
	 * memory upwards, so R6's 20,480 one-page runs are the ones that run out
	 * of its mapping budget (half of vm.max_map_count), after R1-R3.
	 */
	unsigned long total = (R1_PAGES + R2_PAGES + R3_PAGES + R6_PAGES + 3) * PG;
	char *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	char *r1 = mmap(base, R1_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	char *r2 = mmap(r1 + (R1_PAGES + 1) * PG, R2_PAGES * PG, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	char *r3 = mmap(r2 + (R2_PAGES + 1) * PG, R3_PAGES * PG, PROT_READ | PROT_WRITE | PROT_EXEC,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	char *r6 = mmap(r3 + (R3_PAGES + 1) * PG, R6_PAGES * PG, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (r1 == MAP_FAILED || r2 == MAP_FAILED || r3 == MAP_FAILED || r6 == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/* R1, page kind by page % 8: 0-4 pattern, 5 written with zeros, 6 never touched, 7 dropped. */
	for (p = 0; p < R1_PAGES; p++) {
		switch (p % 8) {
		case 5: memset(r1 + p * PG, 0, PG); r1[p * PG] = 1; r1[p * PG] = 0; break;
		case 6: break;
		default: fill(1, r1, p);
		}
	}
	for (p = 7; p < R1_PAGES; p += 8)
		madvise(r1 + p * PG, PG, MADV_DONTNEED);
	for (p = 0; p < R2_PAGES; p++)
		fill(2, r2, p);
	mprotect(r2, R2_PAGES * PG, PROT_READ);
	for (p = 0; p < R3_PAGES; p++)
		fill(3, r3, p);
	for (p = 0; p < R6_PAGES; p += 2)
		fill(6, r6, p);
	for (int b = 0; b < NBLOCKS; b++) {
		blocks[b] = malloc(BLOCK);
		for (unsigned long i = 0; i < BLOCK / 8; i++)
			((uint64_t *)blocks[b])[i] = word(4, b, i);
	}

	/*
	 * R7, after the big reservation (so at a lower address: the restorer, which
	 * walks memory upwards, reaches it before R6 runs out of its budget): a
	 * private mapping of a file of known content whose even pages are written.
	 */
	char data_path[4096];
	snprintf(data_path, sizeof(data_path), "%s.data", argv[1]);
	char *file_pages = malloc(R7_PAGES * PG);
	for (p = 0; p < R7_PAGES; p++)
		fill(7, file_pages, p);
	int data = open(data_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (data < 0 || write(data, file_pages, R7_PAGES * PG) != (ssize_t)(R7_PAGES * PG)) {
		perror(data_path);
		return 1;
	}
	char *r7 = mmap(NULL, R7_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, data, 0);
	close(data);
	if (r7 == MAP_FAILED) {
		perror("mmap file");
		return 1;
	}
	for (p = 0; p < R7_PAGES; p += 2)
		fill(8, r7, p);

	signal(SIGUSR1, on_usr1);
	snprintf(ready, sizeof(ready), "%s.ready", argv[1]);
	FILE *rf = fopen(ready, "w");
	if (!rf)
		return 1;
	fprintf(rf, "ready %d\n", getpid());
	fclose(rf);

	while (!go)
		pause();

	/* Restored: check. */
	out = fopen(argv[1], "w");
	if (!out)
		return 1;

	bad = 0;
	for (p = 0; p < R1_PAGES; p++) {
		int ok = (p % 8 == 5 || p % 8 == 6 || p % 8 == 7) ? is_zero(r1 + p * PG, PG) : is_fill(1, r1, p);
		bad += !ok;
	}
	check(bad == 0, "anon-content", "%lu of the 64 MiB region's pages differ (pattern, zero, untouched, dropped)", bad);

	bad = 0;
	for (p = 0; p < R2_PAGES; p++)
		bad += !is_fill(2, r2, p);
	char perms[5];
	perms_of(r2, perms);
	check(bad == 0 && !strcmp(perms, "r--p"), "read-only-region", "%lu pages differ or permissions are not r--p", bad);

	bad = 0;
	for (p = 0; p < R3_PAGES; p++)
		bad += !is_fill(3, r3, p);
	perms_of(r3, perms);
	check(bad == 0 && !strcmp(perms, "rwxp"), "rwx-region", "%lu pages differ or permissions are not rwxp", bad);

	bad = 0;
	for (p = 0; p < R6_PAGES; p++)
		bad += (p % 2) ? !is_zero(r6 + p * PG, PG) : !is_fill(6, r6, p);
	check(bad == 0, "sparse-region", "%lu pages of the sparse region differ", bad);

	bad = 0;
	for (int b = 0; b < NBLOCKS; b++)
		for (unsigned long i = 0; i < BLOCK / 8; i++)
			bad += ((uint64_t *)blocks[b])[i] != word(4, b, i);
	check(bad == 0, "malloc-heap", "%lu words of the heap blocks differ", bad);

	bad = 0;
	for (p = 0; p < R7_PAGES; p++)
		bad += (p % 2) ? !is_fill(7, r7, p) : !is_fill(8, r7, p);
	check(bad == 0, "file-private-content", "%lu pages of the private file mapping differ (written: the process's, others: the file's)", bad);
	/* Where the written pages come from: the page image (mapped) or the process's own copy (read). */
	fprintf(out, "info file-private-written %s\n", from_page_image(r7) ? "image" : "copy");
	/* Writes, to a written and to a file page, stay in the process: the file keeps its content. */
	r7[0] ^= 1;
	r7[PG] ^= 1;
	int reread = open(data_path, O_RDONLY);
	bad = reread < 0 || pread(reread, file_pages, R7_PAGES * PG, 0) != (ssize_t)(R7_PAGES * PG);
	for (p = 0; !bad && p < R7_PAGES; p++)
		bad += !is_fill(7, file_pages, p);
	if (reread >= 0)
		close(reread);
	uint64_t first = word(8, 0, 0);
	check(bad == 0 && r7[0] == (char)(((char *)&first)[0] ^ 1), "file-private-writes-stay-private",
	      "%lu pages of the file changed (or the write did not read back)", bad);

	unsigned long nmaps = count_maps();
	fprintf(out, "info maps %lu\n", nmaps);

	/* Copy-on-write: writes land in this process only, and read back. */
	bad = 0;
	for (p = 0; p < R1_PAGES; p += 8) {
		((uint64_t *)(r1 + p * PG))[3] = 0xdeadbeef;
		r1[(p + 6) * PG] = 7; /* an untouched page */
	}
	for (p = 0; p < R1_PAGES; p += 8)
		bad += ((uint64_t *)(r1 + p * PG))[3] != 0xdeadbeef || r1[(p + 6) * PG] != 7 ||
		       ((uint64_t *)(r1 + p * PG))[4] != word(1, p, 4);
	check(bad == 0, "write-after-restore", "%lu written pages read back wrong", bad);

	/* fork: the child's writes stay in the child. */
	pid_t child = fork();
	if (child == 0) {
		for (p = 1; p < R1_PAGES; p += 8)
			memset(r1 + p * PG, 0x5a, PG);
		_exit(is_zero(r1 + 6 * PG + 1, PG - 1) ? 0 : 1);
	}
	int status = -1;
	waitpid(child, &status, 0);
	bad = 0;
	for (p = 1; p < R1_PAGES; p += 8)
		bad += !is_fill(1, r1, p);
	check(bad == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork-cow", "%lu pages changed by the child's writes", bad);

	/* mremap: move a patterned range elsewhere, content goes with it. */
	char *moved = mremap(r1 + 8 * PG, 5 * PG, 5 * PG, MREMAP_MAYMOVE);
	bad = moved == MAP_FAILED;
	for (p = 0; !bad && p < 5; p++)
		bad += ((uint64_t *)(moved + p * PG))[5] != word(1, 8 + p, 5);
	check(bad == 0, "mremap-move", "%lu (mremap failed or content moved wrong)", bad);

	/* New memory after restore is zero: brk growth, fresh mmap. */
	char *brk_new = sbrk(1 << 20);
	char *fresh = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	check(brk_new != (void *)-1 && fresh != MAP_FAILED && is_zero(brk_new, 1 << 20) && is_zero(fresh, 8 << 20),
	      "new-memory-zero", "%lu", 0);

	/*
	 * glibc: free the heap blocks, trim (madvise(MADV_DONTNEED) inside the
	 * heap), then calloc: glibc clears what it hands out of a trimmed heap,
	 * so calloc is zero whether the dropped pages refill with zeros or not.
	 */
	for (int b = 0; b < NBLOCKS; b++)
		free(blocks[b]);
	malloc_trim(0);
	bad = 0;
	for (int b = 0; b < NBLOCKS; b++) {
		blocks[b] = calloc(1, BLOCK);
		bad += !blocks[b] || !is_zero(blocks[b], BLOCK);
	}
	check(bad == 0, "malloc-trim-calloc", "%lu calloc'ed blocks not zero after malloc_trim", bad);

	/*
	 * MADV_DONTNEED on restored memory: anonymous memory refills with zeros;
	 * memory mapped from the page image refills from the image (the known
	 * trade-off of --mmap-page-images). Reported, test.sh decides.
	 */
	p = 16;
	madvise(r1 + p * PG, PG, MADV_DONTNEED);
	if (is_zero(r1 + p * PG, PG))
		fprintf(out, "info dontneed zero\n");
	else if (is_fill(1, r1, p))
		fprintf(out, "info dontneed image\n");
	else
		fprintf(out, "info dontneed other\n");

	fprintf(out, "done %d\n", failures);
	fclose(out);
	return failures ? 1 : 0;
}
