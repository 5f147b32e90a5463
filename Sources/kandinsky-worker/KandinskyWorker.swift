import ArgumentParser
import Foundation

/// The one executable: argument parsing only; the libraries do the work.
@main
struct KandinskyWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kandinsky-worker",
        abstract: "Serve the Kandinsky 2.0 text-to-image model from Redis job queues.",
        version: "0.1.0",
        subcommands: [
            Generate.self, Serve.self, Submit.self, Status.self, Cancel.self, Health.self, ModelCommand.self,
            Forward.self,
            Bench.self, QueueWorkerCommand.self, DemoEval.self,
        ]
    )

    /// Checks the processor before any kernel can run, then parses and runs the command as ArgumentParser does.
    static func main() async {
        if let problem = ProcessorCheck.problem() {
            FileHandle.standardError.write(Data("kandinsky-worker: \(problem)\n".utf8))
            Foundation.exit(1)
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// The `Tensor` kernels are compiled for AVX2 + FMA on x86-64 (see `Package.swift`); on an older processor they would
/// stop with an illegal instruction in the middle of a job. This target is compiled for the baseline, so the check
/// itself runs anywhere.
enum ProcessorCheck {
    /// Why this processor cannot run the kernels, or nil.
    static func problem(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> String? {
        #if arch(x86_64)
            guard let cpuinfo, let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
            else { return nil }  // not Linux, or no flags line: nothing to go by
            let flags = Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
            let missing = ["avx2", "fma"].filter { !flags.contains($0) }
            if missing.isEmpty { return nil }
            return "this build's kernels need a processor with AVX2 and FMA (x86-64-v3: Intel Haswell, AMD Zen or "
                + "later); this one lacks \(missing.joined(separator: " and ")). Build on such a machine with the "
                + "target-cpu flag removed from Package.swift."
        #else
            return nil
        #endif
    }
}
