import Testing

@testable import Tensor
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

    @Test func flagsAreTheFirstProcessorsWithoutTheLinesName() {
        #expect(
            ProcessorCheck.flags(cpuinfo: Self.haswell) == ["fpu", "sse", "sse2", "avx", "fma", "f16c", "avx2", "bmi2"])
        #expect(ProcessorCheck.flags(cpuinfo: "processor : 0\n") == nil)
        #expect(ProcessorCheck.flags(cpuinfo: nil) == nil)
    }

    static let avx512: Set<String> = [
        "sse2", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl",
    ]

    /// OpenBLAS 0.3.21 (Debian 12) gives processors it does not know its SSE3 kernel (Prescott): the worker restarts
    /// with the family the processor's flags allow, unless the operator chose one.
    @Test func aKernelForOlderProcessorsIsReplacedByWhatThisOneAllows() {
        #if arch(x86_64)
            let none: [String: String] = [:]
            #expect(
                BLAS.coreTypeForProcessor(detected: "Prescott", flags: Self.avx512, environment: none) == "SkylakeX")
            #expect(
                BLAS.coreTypeForProcessor(detected: "PRESCOTT", flags: Self.avx512, environment: none) == "SkylakeX")
            #expect(BLAS.coreTypeForProcessor(detected: "Haswell", flags: Self.avx512, environment: none) == "SkylakeX")
            let avx2: Set<String> = ["sse2", "avx", "avx2", "fma"]
            #expect(BLAS.coreTypeForProcessor(detected: "Prescott", flags: avx2, environment: none) == "Haswell")
            #expect(BLAS.coreTypeForProcessor(detected: "Sandybridge", flags: avx2, environment: none) == "Haswell")
            // AVX-512 without the BW/DQ/VL that OpenBLAS's AVX-512 kernels need (Knights Landing) is AVX2 to them.
            let knights = avx2.union(["avx512f", "avx512cd", "avx512er", "avx512pf"])
            #expect(BLAS.coreTypeForProcessor(detected: "Prescott", flags: knights, environment: none) == "Haswell")
        #endif
    }

    @Test func aFittingKernelOrTheOperatorsChoiceIsKept() {
        let none: [String: String] = [:]
        #expect(BLAS.coreTypeForProcessor(detected: "SkylakeX", flags: Self.avx512, environment: none) == nil)
        // Zen 4: OpenBLAS 0.3.21 names its AVX-512 kernel Cooperlake.
        #expect(BLAS.coreTypeForProcessor(detected: "Cooperlake", flags: Self.avx512, environment: none) == nil)
        #expect(BLAS.coreTypeForProcessor(detected: "Zen", flags: ["avx2", "fma"], environment: none) == nil)
        #expect(BLAS.coreTypeForProcessor(detected: "Prescott", flags: ["sse2", "sse3"], environment: none) == nil)
        let chosen = ["OPENBLAS_CORETYPE": "Prescott"]
        #expect(BLAS.coreTypeForProcessor(detected: "Prescott", flags: Self.avx512, environment: chosen) == nil)
    }

    @Test func thisMachineRunsTheKernels() {
        // The test binary itself runs the AVX2 kernels; the check must agree with the machine it runs on.
        #expect(ProcessorCheck.problem() == nil)
    }
}
