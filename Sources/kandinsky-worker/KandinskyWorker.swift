import ArgumentParser

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
}
