import ArgumentParser
import JSON
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
            console.document(
                .object([
                    "devices": .array(
                        devices.map { d in
                            .object([
                                "id": .string(d.id.description), "name": .string(d.name), "kind": .string(d.kind),
                                "memory_bytes": .integer(d.memoryBytes),
                                "precisions": .array(d.precisions.map { .string($0.rawValue) }),
                                "features": .array(d.features.map { .string($0) }),
                            ])
                        }),
                    "notes": .array(notes.map { .string($0) }),
                ]))
        }
    }
}
