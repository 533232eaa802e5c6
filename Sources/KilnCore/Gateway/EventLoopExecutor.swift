import NIOCore
import NIOPosix

/// Runs Swift concurrency jobs on one NIO event loop, as a task executor preference
/// (`withTaskExecutorPreference`, SE-0417).
///
/// Why: a request through the gateway crosses two sockets (client to gateway, gateway to
/// instance), and each socket's reads and writes happen on an event loop. Without a
/// preference, every await in between resumes on Swift's global thread pool, so each request
/// wakes threads back and forth several times; on a 2-core machine those wake-ups (futexes,
/// context switches, cold caches) cost more CPU than the proxying itself. With the request's
/// task on its connection's event loop (and the upstream connection on that same loop, see
/// ``PooledInstanceTransport``), a resumption is a closure appended to the loop's queue on
/// the thread that is already running: no wake-up at all. Default actors (``FunctionPool``)
/// run on the preferred executor too.
///
/// The price: code running in such a task blocks the loop while it runs, so everything on
/// the request path must stay non-blocking (it does: restores and stops run in the gateway's
/// own task group, without a preference).
final class EventLoopExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// One executor per loop of `group`, made once: looked up per connection, not allocated.
    struct Table: Sendable {
        private let executors: [EventLoopExecutor]

        init(_ group: any EventLoopGroup) {
            executors = group.makeIterator().map(EventLoopExecutor.init)
        }

        /// The executor of `loop`; nil for a loop of another group.
        func executor(for loop: any EventLoop) -> EventLoopExecutor? {
            executors.first { $0.eventLoop === loop }
        }

        /// The executor of the loop the calling thread runs, if it runs one of this group's.
        var current: EventLoopExecutor? {
            executors.first { $0.eventLoop.inEventLoop }
        }
    }
}
