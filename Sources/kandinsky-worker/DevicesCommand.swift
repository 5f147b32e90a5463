import ArgumentParser
import Worker

/// `devices`: what `--device` can name on this host, in the order it indexes them.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List the devices this host can run the model on: id, name, kind, memory, precisions, features.")

    @OptionGroup var output: JSONOutputOption

    func run() throws {
        let (devices, notes) = Devices.list()
        let console = output.console
        for d in devices { console.line(d.line) }
        for note in notes { console.line("(\(note))") }
        if output.json {
            try console.document([
                "devices": devices.map { d -> [String: Any] in
                    [
                        "id": d.id.description, "name": d.name, "kind": d.kind, "memory_bytes": d.memoryBytes,
                        "precisions": d.precisions.map(\.rawValue), "features": d.features,
                    ]
                },
                "notes": notes,
            ])
        }
    }
}
