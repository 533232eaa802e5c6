import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("JVM compaction")
struct JVMCompactorTests {
    @Test func freeRatiosAreReadFromVMFlags() throws {
        let flags = """
            1:
                 uintx MaxHeapFreeRatio                         = 70                                     {manageable} {default}
                 uintx MinHeapFreeRatio                         = 35                                     {manageable} {command line}
                 uintx MinHeapSize                              = 8388608                                {product} {ergonomic}
            """
        let ratios = try #require(JVMCompactor.freeRatios(inFlags: flags))
        #expect(ratios.min == 35)
        #expect(ratios.max == 70)
        #expect(JVMCompactor.freeRatios(inFlags: "1:\nnothing here") == nil)
    }

    @Test func scriptsShrinkThenPutTheUsersBoundsBack() {
        let scripts = JVMCompactor.scripts(original: (min: 35, max: 70), trimNativeHeap: true)
        let collect = scripts.collect.split(separator: "\n")
        // Min must drop before Max (the JVM refuses Max < Min), and the GC runs with them lowered.
        #expect(collect.firstIndex(of: "VM.set_flag MinHeapFreeRatio 0")! < collect.firstIndex(of: "VM.set_flag MaxHeapFreeRatio 10")!)
        #expect(collect.firstIndex(of: "VM.set_flag MaxHeapFreeRatio 10")! < collect.firstIndex(of: "GC.run")!)
        let trim = scripts.trim.split(separator: "\n")
        #expect(trim.first == "System.trim_native_heap")
        // Max goes back up before Min (the JVM refuses Min > Max).
        #expect(Array(trim.suffix(2)) == ["VM.set_flag MaxHeapFreeRatio 70", "VM.set_flag MinHeapFreeRatio 35"])
        #expect(!JVMCompactor.scripts(original: (40, 70), trimNativeHeap: false).trim.contains("trim_native_heap"))
    }
}
