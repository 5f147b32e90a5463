/// The samplers (DESIGN §5, spec §6): one vocabulary for jobs, the configuration, the command line and the model.
public enum Sampler: String, CaseIterable, Sendable, Codable {
    /// The 2.0 release's DDIM: "ddimK" respacing, eta honoured, x0 thresholded and ε re-derived. The default.
    case ddim
    /// The release's ancestral sampler with learned-range variance.
    case pSampler = "p_sampler"
    /// Today's repository's PLMS.
    case plms
    /// Today's repository's LDM-style DDIM (eta ignored as there, no thresholding, final ᾱ_prev = ᾱ[0]).
    case ddimLDM = "ddim_ldm"
    /// DPM-Solver++(2M) on the same schedule (not in the official code; good images in ~20 steps).
    case dpmpp2M = "dpmpp_2m"

    /// Whether the sampler uses `eta` (the others ignore it, so the PNG's settings line leaves it out).
    public var usesEta: Bool { self == .ddim || self == .pSampler }
}
