import ArgumentParser
import Foundation
import Generation
import Tensor
import Worker

/// The one executable: argument parsing only; the libraries do the work.
@main
struct KandinskyWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kandinsky-worker",
        abstract: "Serve the Kandinsky 2.0 text-to-image model from Redis job queues.",
        version: productVersion,
        subcommands: [
            Generate.self, Serve.self, Submit.self, Status.self, Cancel.self, Health.self, ModelCommand.self,
            Forward.self,
            BenchCommand.self, DevicesCommand.self, DemoEval.self,
        ]
    )

    /// Checks the processor before any kernel can run, then hands over to ArgumentParser's own entry point.
    static func main() async {
        let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        if let problem = ProcessorCheck.problem(cpuinfo: cpuinfo) {
            FileHandle.standardError.write(Data("kandinsky-worker: \(problem)\n".utf8))
            Foundation.exit(1)
        }
        restartForTheBLASKernel(flags: ProcessorCheck.flags(cpuinfo: cpuinfo))
        await main(nil)
    }

    /// Restarts this process (the same PID, arguments and descriptors) with `OPENBLAS_CORETYPE` set where OpenBLAS
    /// picked a kernel family for older processors than this one (`BLAS.coreTypeForProcessor`): OpenBLAS reads the
    /// variable only as it loads, before any of our code runs.
    static func restartForTheBLASKernel(flags: Set<String>?) {
        let detected = BLAS.coreName
        guard let flags,
            let core = BLAS.coreTypeForProcessor(
                detected: detected, flags: flags, environment: ProcessInfo.processInfo.environment)
        else { return }
        setenv(BLAS.coreTypeVariable, core, 1)
        setenv(BLAS.detectedCoreVariable, detected, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when the restart failed: carry on with OpenBLAS's choice, and say so.
        let reason = String(cString: strerror(errno))
        unsetenv(BLAS.coreTypeVariable)
        unsetenv(BLAS.detectedCoreVariable)
        FileHandle.standardError.write(
            Data(
                ("kandinsky-worker: OpenBLAS picked its \(detected) kernel, for older processors than this one, and "
                    + "restarting with \(BLAS.coreTypeVariable)=\(core) failed (\(reason)); set it in the environment "
                    + "for full speed\n").utf8))
    }
}
