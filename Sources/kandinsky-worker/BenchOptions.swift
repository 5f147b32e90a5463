import ArgumentParser

/// `--json`, shared by the bench commands: with it stdout holds one JSON document and the human lines go to stderr.
struct JSONOutputOption: ParsableArguments {
    @Flag(help: "Print one JSON document on stdout (the human lines go to stderr).")
    var json = false

    var console: Console { Console(json: json) }

    /// Prints a report: its human lines, then (with `--json`) its document.
    func print(lines: [String], document: () throws -> String) throws {
        for line in lines { console.line(line) }
        if json { console.document(json: try document()) }
    }
}

/// What `--repeats` defaults to in a bench command family.
protocol RepeatsDefault {
    static var repeats: Int { get }
}

/// `--repeats`, `--threads` and `--json`, shared by the bench commands that time kernels and models.
struct MeasurementOptions<Default: RepeatsDefault>: ParsableArguments {
    @Option(help: "Timed repetitions of each case (after one warm-up).")
    var repeats: Int = Default.repeats

    @Option(help: "Threads for OpenBLAS and the other kernels (default: one per core).")
    var threads: Int?

    @OptionGroup var output: JSONOutputOption

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }
}
