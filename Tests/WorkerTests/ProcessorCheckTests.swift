import Testing

@testable import Worker

/// The start-up check that keeps a build for AVX2 + FMA from dying with an illegal instruction mid-job.
@Suite struct ProcessorCheckTests {
    static let haswell =
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse sse2 avx fma f16c avx2 bmi2\n\nprocessor\t: 1\n"
    static let sandyBridge = "processor\t: 0\nflags\t\t: fpu sse sse2 sse4_2 avx\n"

    @Test func acceptsAProcessorWithAVX2AndFMA() {
        #expect(ProcessorCheck.problem(cpuinfo: Self.haswell) == nil)
    }

    @Test func namesWhatAnOlderProcessorLacks() {
        #if arch(x86_64)
            let problem = ProcessorCheck.problem(cpuinfo: Self.sandyBridge)
            #expect(problem?.contains("lacks avx2 and fma") == true, "\(problem ?? "nil")")
            #expect(ProcessorCheck.problem(cpuinfo: "flags : avx2 sse2\n")?.contains("lacks fma") == true)
        #endif
    }

    @Test func nothingToGoByIsNoProblem() {
        #expect(ProcessorCheck.problem(cpuinfo: nil) == nil)
        #expect(ProcessorCheck.problem(cpuinfo: "processor : 0\n") == nil)
    }

    @Test func thisMachineRunsTheKernels() {
        // The test binary itself runs the AVX2 kernels; the check must agree with the machine it runs on.
        #expect(ProcessorCheck.problem() == nil)
    }
}
