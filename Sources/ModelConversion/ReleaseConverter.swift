import Foundation
import JSON
import Tensor

/// Converts the official Kandinsky 2.0 release (`Kandinsky-2-0.pt`, `Kandinsky-2-0-inpainting.pt` if present,
/// `vae.ckpt`, `text_encoder1/`, `text_encoder2/`) into a model directory (DESIGN.md §2): one safetensors file per
/// component with the keys, dtypes, shapes and bytes of the checkpoint's tensors unchanged, the two SentencePiece
/// models copied, and `model.json` (see `ModelConfig`). `ReleaseLayout` says which keys are kept.
///
/// Everything but the tensor bytes is read and checked before anything is written: a missing file, a value that is
/// not a tensor, a storage out of range or a configuration that contradicts the weights stops the conversion with
/// no output. Each output file is written under a temporary name and renamed into place, and `model.json` comes
/// last, so damage found while copying bytes (a storage failing its CRC-32) leaves a directory without model.json.
public struct ReleaseConverter {
    public var releaseDirectory: String
    public var modelDirectory: String
    /// A model.json (or part of one) merged over the built configuration.
    public var configOverride: String?
    /// Replace files already in the model directory.
    public var overwrite: Bool
    public var limits = Unpickler.Limits()

    public init(
        releaseDirectory: String, modelDirectory: String, configOverride: String? = nil, overwrite: Bool = false
    ) {
        self.releaseDirectory = releaseDirectory
        self.modelDirectory = modelDirectory
        self.configOverride = configOverride
        self.overwrite = overwrite
    }

    /// What a conversion wrote.
    public struct Report: Sendable {
        public struct File: Sendable {
            /// File name in the model directory.
            public var name: String
            /// Release file it came from.
            public var source: String
            public var tensors: Int
            public var bytes: Int
            /// Keys of the checkpoint that are not the model's (training-only entries, recomputed buffers).
            public var dropped: [String]
            /// Tied keys the checkpoint lacked, written as copies of their twin.
            public var tiedCopies: [String]
        }

        public var files: [File] = []
    }

    /// One component, read and checked, ready to write.
    private struct Plan {
        var component: ReleaseComponent
        var checkpoint: TorchCheckpoint
        /// Output name → tensor (a tied copy appears under both names).
        var tensors: [String: (tensor: TorchTensor, key: String, dtype: DType)]
        var dropped: [String]
        var tiedCopies: [String]
    }

    /// Runs the conversion; `log` receives one line per step.
    @discardableResult
    public func run(log: (String) -> Void = { _ in }) throws(ConversionError) -> Report {
        // Read and check everything first.
        var plans: [Plan] = []
        for component in ReleaseLayout.components {
            let source = path(in: releaseDirectory, component.source)
            if component.isOptional && !FileManager.default.fileExists(atPath: source) {
                log("\(component.source): not in the release, \(component.output) not written")
                continue
            }
            log("reading \(component.source)")
            plans.append(try plan(component, source: source))
        }
        let config = try buildConfig(plans)
        try ModelConfig.check(
            config,
            shapes: Dictionary(
                uniqueKeysWithValues: plans.map { ($0.component.name, $0.tensors.mapValues(\.tensor.shape)) }),
            file: configOverride ?? "model.json (built from the release and CONFIG_2_0)")
        let tokenizers = try ReleaseLayout.tokenizers.map { t throws(ConversionError) in
            (bytes: try readFile(path(in: releaseDirectory, t.source)), output: t.output)
        }

        // Then write.
        do {
            try FileManager.default.createDirectory(atPath: modelDirectory, withIntermediateDirectories: true)
        } catch {
            throw ConversionError(
                .io, "cannot create the directory: \(error.localizedDescription)", file: modelDirectory)
        }
        let outputs = plans.map(\.component.output) + tokenizers.map(\.output) + ["model.json"]
        if !overwrite {
            for name in outputs where FileManager.default.fileExists(atPath: path(in: modelDirectory, name)) {
                throw ConversionError(
                    .outputExists, "already exists (pass --overwrite to replace it)",
                    file: path(in: modelDirectory, name))
            }
        }
        var report = Report()
        for plan in plans {
            report.files.append(try write(plan))
            let file = report.files.last!
            log(
                "wrote \(file.name): \(file.tensors) tensors, \(file.bytes) bytes of data from \(file.source)"
                    + (file.dropped.isEmpty
                        ? ""
                        : "; left out \(file.dropped.count) entries that are not the model's: "
                            + Self.abbreviated(file.dropped))
                    + (file.tiedCopies.isEmpty ? "" : "; tied copies: \(file.tiedCopies.joined(separator: ", "))"))
        }
        for tokenizer in tokenizers {
            let file = try OutputFile(path: path(in: modelDirectory, tokenizer.output), overwrite: overwrite)
            try file.write(tokenizer.bytes)
            try file.commit()
            log("wrote \(tokenizer.output): \(tokenizer.bytes.count) bytes")
        }
        let json = try OutputFile(path: path(in: modelDirectory, "model.json"), overwrite: overwrite)
        try json.write(Array((ModelConfig.pretty(config) + "\n").utf8))
        try json.commit()
        log("wrote model.json")
        let inpaint = path(in: modelDirectory, ReleaseLayout.unetInpaint.output)
        if !plans.contains(where: { $0.component.name == ReleaseLayout.unetInpaint.name })
            && FileManager.default.fileExists(atPath: inpaint)
        {
            log("note: \(inpaint) is left from before; it did not come from this release")
        }
        return report
    }

    // MARK: - Reading

    private func plan(_ component: ReleaseComponent, source: String) throws(ConversionError) -> Plan {
        let checkpoint = try TorchCheckpoint(path: source, limits: limits)
        var value = checkpoint.root
        var place = "the checkpoint"
        for step in component.stateDictPath {
            guard let dict = value.dictValue, let inner = dict[step] else {
                throw ConversionError(
                    .notAStateDict, "\(place) is \(value.summary), expected a dict with a \"\(step)\" entry",
                    file: source, key: step)
            }
            (value, place) = (inner, "\"\(step)\"")
        }
        guard let stateDict = value.dictValue else {
            throw ConversionError(.notAStateDict, "\(place) is \(value.summary), expected a state dict", file: source)
        }
        var tensors: [String: (tensor: TorchTensor, key: String, dtype: DType)] = [:]
        var dropped: [String] = []
        for (keyValue, item) in stateDict.items {
            guard let key = keyValue.stringValue else {
                throw ConversionError(
                    .notAStateDict, "\(place) has a key that is \(keyValue.summary), not a string", file: source)
            }
            guard component.keeps(key) else {
                dropped.append(key)
                continue
            }
            guard let tensor = item.tensorValue else {
                if case .object(let object) = item, let problem = object.problem {
                    throw ConversionError(
                        problem, object.problemMessage ?? "not a usable tensor", file: source, key: key)
                }
                throw ConversionError(
                    .notATensor, "is \(item.summary), not a tensor; the model needs a tensor here", file: source,
                    key: key)
            }
            tensors[key] = (tensor, key, try checkpoint.check(tensor, key: key))
        }
        var tiedCopies: [String] = []
        for group in component.tiedKeys {
            guard let present = group.first(where: { tensors[$0] != nil }) else { continue }
            for key in group where tensors[key] == nil {
                tensors[key] = tensors[present]
                tiedCopies.append(key)
            }
        }
        guard !tensors.isEmpty else {
            throw ConversionError(.notAStateDict, "\(place) holds no weights of the \(component.name)", file: source)
        }
        return Plan(
            component: component, checkpoint: checkpoint, tensors: tensors, dropped: dropped, tiedCopies: tiedCopies)
    }

    private func buildConfig(_ plans: [Plan]) throws(ConversionError) -> JSONValue {
        let te1 = path(in: releaseDirectory, ReleaseLayout.textEncoder1Config)
        let te2 = path(in: releaseDirectory, ReleaseLayout.textEncoder2Config)
        let linear = plans.first { $0.component.name == ReleaseLayout.textEncoder1.name }?
            .tensors["LinearTransformation.weight"]?.tensor.shape.first
        return try ModelConfig.build(
            textEncoder1: try readJSON(te1), textEncoder2: try readJSON(te2), linearOutFeatures: linear,
            override: try configOverride.map { path throws(ConversionError) in try readJSON(path) },
            files: (te1, te2, configOverride))
    }

    private func readJSON(_ path: String) throws(ConversionError) -> JSONValue {
        let bytes = try readFile(path, limit: 16 << 20)
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw ConversionError(.badConfig, "not valid JSON (\(error))", file: path)
        }
    }

    private func readFile(_ path: String, limit: Int = 1 << 30) throws(ConversionError) -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ConversionError(.missingFile, "not found", file: path)
        }
        let file = try mapped(path)
        guard file.bytes.count <= limit else {
            throw ConversionError(.limitExceeded, "file of \(file.bytes.count) bytes exceeds \(limit)", file: path)
        }
        return Array(file.bytes)
    }

    private func mapped(_ path: String) throws(ConversionError) -> MappedFile {
        do {
            return try MappedFile(path: path)
        } catch {
            throw ConversionError(.io, error.message, file: path)
        }
    }

    // MARK: - Writing

    private func write(_ plan: Plan) throws(ConversionError) -> Report.File {
        let target = path(in: modelDirectory, plan.component.output)
        let file = try OutputFile(path: target, overwrite: overwrite)
        let (header, layout) = SafetensorsWriter.header(
            for: plan.tensors.map { (name: $0.key, dtype: $0.value.dtype, shape: $0.value.tensor.shape) })
        try file.write(header)
        for entry in layout {
            let (tensor, key, _) = plan.tensors[entry.name]!
            var written = 0
            try plan.checkpoint.stream(tensor, key: key) { chunk throws(ConversionError) in
                written += chunk.count
                try file.write(chunk)
            }
            guard written == entry.range.count else {
                throw ConversionError(
                    .truncated, "gave \(written) bytes of the \(entry.range.count) its shape needs",
                    file: plan.checkpoint.path, key: key)
            }
        }
        try file.commit()
        return Report.File(
            name: plan.component.output, source: plan.component.source, tensors: layout.count,
            bytes: layout.last?.range.upperBound ?? 0, dropped: plan.dropped, tiedCopies: plan.tiedCopies)
    }

    private func path(in directory: String, _ relative: String) -> String {
        (directory as NSString).appendingPathComponent(relative)
    }

    private static func abbreviated(_ keys: [String]) -> String {
        keys.count <= 6 ? keys.joined(separator: ", ") : keys.prefix(5).joined(separator: ", ") + ", …"
    }
}
