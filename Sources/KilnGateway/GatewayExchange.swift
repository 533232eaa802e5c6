import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import NIOCore
import NIOHTTP1

/// Where an exchange's answer goes: the public connection the request came in on
/// (``GatewayRequestHandler``), or a collector (``Gateway/handle(_:)``). Called on the
/// exchange's event loop, in order: a head, body parts, then an end or an abort.
protocol GatewayResponder: AnyObject {
    /// The head; its Content-Length, when it has one, gives the length of the body to come.
    func writeHead(_ head: consuming HTTPResponseHead)
    /// Writes a part of the body; nothing is sent before ``flush()`` or ``writeEnd()``.
    func writeBody(_ part: ByteBuffer)
    func flush()
    func writeEnd()
    /// The response broke off after its head went out: closing the connection is the only way
    /// left to tell the client.
    func abort()
    /// Whether the client takes more now (flow control of streamed bodies); when it did not,
    /// the responder calls ``GatewayExchange/resume()`` once it does.
    var isWritable: Bool { get }
}

extension GatewayResponder {
    /// Writes a whole response: its head, its body if any, its end.
    func respond(_ head: consuming HTTPResponseHead, body: ByteBuffer) {
        writeHead(head)
        if body.readableBytes > 0 { writeBody(body) }
        writeEnd()
    }

    /// Writes one of the gateway's own responses (errors), with its length.
    func respond(_ response: GatewayResponse) {
        respond(response.nioHead, body: response.body)
    }
}

/// One request's way through the gateway, on the event loop of the connection it came in on:
/// lease an instance of its function (at once, or after waiting for one to start or free up),
/// forward the request, retry what never reached an instance, and answer.
///
/// Everything happens in callbacks on that one loop (the transport's, the pool's lease for a
/// request that waited): no task, no actor, no thread hop for a request that finds an instance
/// with room, which is nearly every request under load.
///
/// Responses of up to ``bufferedResponseBytes`` are held until they are complete and go out
/// whole, with a Content-Length: a failure before their end can still be answered with a 502
/// naming the instance, and most clients would rather have a length than chunks. Longer ones
/// are streamed as they come, at the pace the client reads them.
final class GatewayExchange: ResponseReceiver {
    static let bufferedResponseBytes = 64 << 10

    private enum Phase {
        case starting
        case waiting(ticket: Int)
        case forwarding(Lease)
        case done
    }

    private let gateway: Gateway
    private let pool: FunctionPool
    private let request: ForwardedRequest
    private let loop: any EventLoop
    private let arrival: ContinuousClock.Instant
    /// Until the exchange is done (then nil: the responder and the exchange refer to each other).
    private var responder: (any GatewayResponder)?
    private var phase = Phase.starting
    private var attempt = 0
    private var cancelled = false
    private var reading: (any ResponseReading)?
    /// The response head as the client will get it, while the response is held.
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private var streaming = false

    init(
        gateway: Gateway, pool: FunctionPool, request: ForwardedRequest, on loop: any EventLoop, arrival: ContinuousClock.Instant,
        responder: any GatewayResponder
    ) {
        self.gateway = gateway
        self.pool = pool
        self.request = request
        self.loop = loop
        self.arrival = arrival
        self.responder = responder
    }

    private var function: String { pool.function }

    /// Leases an instance and forwards the request to it.
    func start() {
        attempt += 1
        switch pool.acquire(arrivedAt: arrival, onLease: self.leaseHandler()) {
        case .leased(let lease): forward(to: lease)
        case .waiting(let ticket): phase = .waiting(ticket: ticket)
        case .refused(let failure): answer(failure)
        }
    }

    /// The client went away. A request still waiting for an instance leaves the queue; one
    /// under way runs to its end (its connection to the instance stays usable), unheard.
    func cancel() {
        cancelled = true
        if case .waiting(let ticket) = phase, pool.cancelWaiting(ticket) {
            phase = .done
            responder = nil
        }
    }

    /// The client takes more again: go on reading a streamed response.
    func resume() {
        reading?.resume()
    }

    /// For a request that waits: its lease comes from whichever thread frees an instance, and
    /// is taken on this exchange's loop.
    private func leaseHandler() -> FunctionPool.LeaseHandler {
        let bound = NIOLoopBound(self, eventLoop: loop)
        let loop = self.loop
        return { result in loop.execute { bound.value.leaseArrived(result) } }
    }

    private func leaseArrived(_ result: Result<Lease, GatewayFailure>) {
        guard case .waiting = phase, !cancelled else {
            if case .success(let lease) = result { pool.release(lease, outcome: .unused) }
            return
        }
        switch result {
        case .success(let lease): forward(to: lease)
        case .failure(let failure): answer(failure)
        }
    }

    private func forward(to lease: Lease) {
        phase = .forwarding(lease)
        reading = gateway.transport.send(request, to: lease.instance, timeout: gateway.configuration.requestTimeout, on: loop, receiver: self)
    }

    // MARK: The instance's response

    var isReadyForMore: Bool {
        !streaming || (responder?.isWritable ?? true)
    }

    func receiveHead(_ head: HTTPResponseHead) {
        guard case .forwarding(let lease) = phase else { return }
        self.head = Gateway.clientHead(of: head, from: lease.instance, servedBy: lease.servedBy)
    }

    func receiveBody(_ part: ByteBuffer) {
        if streaming {
            responder?.writeBody(part)
            responder?.flush()
            return
        }
        if body == nil {
            body = part
        } else {
            body!.writeImmutableBuffer(part)
        }
        if body!.readableBytes > Self.bufferedResponseBytes, let head = head.take() {
            // Too long to hold: from here on the client gets it as it comes.
            streaming = true
            responder?.writeHead(head)
            responder?.writeBody(body!)
            responder?.flush()
            body = nil
        }
    }

    func receiveEnd() {
        guard case .forwarding(let lease) = phase else { return }
        phase = .done
        pool.release(lease, outcome: .answered)
        pool.metrics.recordRequest(.answered, arrival.duration(to: .now))
        pool.metrics.served[lease.servedBy]?.increment()
        if streaming {
            responder?.writeEnd()
        } else if var head = head.take() {
            // Taken out of `self`, the head has one owner: the fields change in place.
            let body = self.body.take() ?? ByteBuffer()
            // A HEAD response keeps the Content-Length the instance gave (that of the GET body
            // it did not send), as do 1xx, 204 and 304 ones (no body); any other says how long
            // the body it brings is.
            if request.head.method != .HEAD, head.status.mayHaveResponseBody {
                head.headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
            }
            responder?.respond(head, body: body)
        }
        finish()
    }

    func receiveFailure(_ failure: TransportFailure) {
        guard case .forwarding(let lease) = phase else { return }
        let instance = lease.instance.id
        if streaming {
            phase = .done
            pool.release(lease, outcome: .failed)
            pool.metrics.recordRequest(.upstreamError, arrival.duration(to: .now))
            gateway.logger.error("response cut short", metadata: ["function": "\(function)", "instance": "\(instance)", "error": "\(failure)"])
            responder?.abort()
            finish()
            return
        }
        head = nil
        body = nil
        let retry: Bool
        switch failure {
        case .notSent(let reason):
            pool.release(lease, outcome: .unreachable(reason))
            retry = true
        case .noResponse(let reason):
            pool.release(lease, outcome: .unreachable(reason))
            retry = request.head.method.isIdempotent
        case .timedOut, .failed:
            pool.release(lease, outcome: .failed)
            retry = false
        }
        if retry, attempt < gateway.configuration.maxAttempts, !cancelled {
            pool.metrics.retries.increment()
            gateway.logger.warning(
                failure.wasNotSent ? "request did not reach an instance; retrying" : "idempotent request got no response; retrying",
                metadata: [
                    "function": "\(function)", "instance": "\(instance)", "attempt": "\(attempt)", "error": "\(failure)",
                ])
            phase = .starting
            start()
            return
        }
        phase = .done
        gateway.logger.error("request failed", metadata: ["function": "\(function)", "instance": "\(instance)", "error": "\(failure)"])
        if case .timedOut = failure {
            answer(
                Gateway.error(
                    .gatewayTimeout, .instanceTimeout, "instance \(instance) did not answer within \(gateway.configuration.requestTimeout)",
                    function: function, instance: instance), outcome: .upstreamTimeout)
        } else {
            answer(
                Gateway.error(.badGateway, .instanceFailed, "instance \(instance) failed: \(failure)", function: function, instance: instance),
                outcome: .upstreamError)
        }
    }

    // MARK: Answering

    private func answer(_ failure: GatewayFailure) {
        phase = .done
        let (response, outcome) = Gateway.response(for: failure, function: function)
        answer(response, outcome: outcome)
    }

    private func answer(_ response: GatewayResponse, outcome: GatewayMetrics.Outcome) {
        pool.metrics.recordRequest(outcome, arrival.duration(to: .now))
        responder?.respond(response)
        finish()
    }

    private func finish() {
        responder = nil
        reading = nil
    }
}

extension HTTPMethod {
    /// RFC 9110 9.2.2: repeating these has the effect of doing them once, so a request whose
    /// connection broke before any answer may be sent again.
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: true
        default: false
        }
    }
}
