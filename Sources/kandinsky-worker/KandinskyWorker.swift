import ArgumentParser
import Foundation
import Worker

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

    /// Checks the processor before any kernel can run, then hands over to ArgumentParser's own entry point.
    static func main() async {
        if let problem = ProcessorCheck.problem() {
            FileHandle.standardError.write(Data("kandinsky-worker: \(problem)\n".utf8))
            Foundation.exit(1)
        }
        await main(nil)
    }
}
