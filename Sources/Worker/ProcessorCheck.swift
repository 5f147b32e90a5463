import Foundation

/// The `Tensor` kernels are compiled for AVX2 + FMA on x86-64 (see `Package.swift`); on an older processor they would
/// stop with an illegal instruction in the middle of a job. This module is compiled for the baseline, so the check
/// itself runs anywhere; the executable calls it before anything else.
public enum ProcessorCheck {
    /// The first processor's flags in `/proc/cpuinfo` (avx2, fma, avx512f, …), or nil where there is no such line.
    public static func flags(
        cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
    ) -> Set<String>? {
        guard let cpuinfo, let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return nil }
        return Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init).dropFirst())
    }

    /// Why this processor cannot run the kernels, or nil.
    public static func problem(
        cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
    ) -> String? {
        #if arch(x86_64)
            guard let flags = flags(cpuinfo: cpuinfo) else { return nil }  // not Linux, or no flags line
            let missing = ["avx2", "fma"].filter { !flags.contains($0) }
            if missing.isEmpty { return nil }
            return "this build's kernels need a processor with AVX2 and FMA (x86-64-v3: Intel Haswell, AMD Zen or "
                + "later); this one lacks \(missing.joined(separator: " and ")). To run here, build with the "
                + "-target-cpu setting removed from Package.swift."
        #else
            return nil
        #endif
    }
}
