// MARK: - Devices

/// Where a tensor's elements live and which backend computes on them, as `--device` names it.
///
/// Only the CPU has a backend today; `vulkan:N` (the N-th Vulkan device) is named so that commands and configuration
/// can refuse it clearly until the Vulkan backend brings its storage.
public enum Device: Hashable, Sendable, CustomStringConvertible {
    /// Host memory, computed by `CPUBackend`.
    case cpu
    /// The N-th Vulkan device, in the order `kandinsky-worker devices` lists them.
    case vulkan(Int)

    /// `cpu` or `vulkan:N`, or nil.
    public init?(name: String) {
        let t = name.trimmingCharacters(in: .whitespaces).lowercased()
        if t == "cpu" {
            self = .cpu
        } else if t.hasPrefix("vulkan:"), let n = Int(t.dropFirst("vulkan:".count)), (0..<1024).contains(n) {
            self = .vulkan(n)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case .vulkan(let n): return "vulkan:\(n)"
        }
    }
}

// MARK: - Backend

/// A device backend's counters and memory, as `bench` and `/metrics` report them.
public struct BackendStatistics: Sendable, Equatable {
    /// Kernels dispatched, command buffers submitted, bytes copied host → device and device → host, since start.
    public var dispatches: Int, submits: Int, bytesToDevice: Int, bytesFromDevice: Int
    /// Device memory held by tensors now, at most since the last `resetPeak`, and held from the driver.
    public var memoryInUse: Int, memoryPeak: Int, memoryReserved: Int
    /// The device's memory (its largest device-local heap).
    public var memoryTotal: Int

    public init(
        dispatches: Int, submits: Int, bytesToDevice: Int, bytesFromDevice: Int, memoryInUse: Int, memoryPeak: Int,
        memoryReserved: Int, memoryTotal: Int
    ) {
        (self.dispatches, self.submits, self.bytesToDevice, self.bytesFromDevice) =
            (dispatches, submits, bytesToDevice, bytesFromDevice)
        (self.memoryInUse, self.memoryPeak, self.memoryReserved, self.memoryTotal) =
            (memoryInUse, memoryPeak, memoryReserved, memoryTotal)
    }
}

/// The operations the Kandinsky models and samplers compute with: one table per device, so that the model is
/// written once and cannot tell the devices apart.
///
/// DESIGN: why a class-bound protocol of whole operations on tensors.
///
/// - **A GPU records, the CPU runs.** A GPU backend (Vulkan, the next step) turns each call into commands recorded in a
///   command buffer and submits the buffer when a result must come back (`download`), or when the buffer is full;
///   the CPU backend runs each call at once. Model code therefore never reads or writes a tensor's memory: every
///   computation, down to the sampler's arithmetic, is one named call here, and only host-made inputs (noise,
///   timestep tables, masks, token biases) go up through `upload` and final images come down through `rgb8`.
/// - **Named sampler arithmetic, no closures.** A closure over elements (`zipMap { c1 * $0 - c2 * $1 }`) cannot be
///   recorded on a GPU. The samplers' steps are a few named operations instead — a weighted sum with per-image
///   coefficients (ml-stable-diffusion's `weightedSum`), the guidance combine, the ancestral step, the per-image
///   dynamic threshold, the inpainting blend — each a small kernel on any device.
/// - **An instance, not static functions.** A backend owns its device's state (a queue, its memory pools); the
///   modules get theirs at construction (through `WeightFile.backend`, which also uploads their weights once) and
///   a sampling run through `SamplingRun.backend`. One existential call per operation costs nothing against the
///   operations themselves; the loops inside run in the backend, specialised.
/// - **Bit for bit.** Each operation states its arithmetic and order (`a·x + b·y` left to right, then the division):
///   the CPU backend does exactly that, so its results are those of the code it replaced; another backend states
///   its own tolerance in the tests.
public protocol ComputeBackend: AnyObject, Sendable {
    /// The device whose tensors this backend computes on.
    var device: Device { get }

    // MARK: Transfers and memory

    /// A tensor on this device holding `values` (row-major) with shape `shape`.
    func upload(_ values: [Float], shape: [Int]) -> Tensor
    /// `host` (a tensor made on the host: noise, masks, a weight) on this device; on the CPU the same tensor.
    func upload(_ host: Tensor) -> Tensor
    /// A layer weight held in 16 bits (`--precision f16`, an F16 or BF16 file) kept in half precision on this device
    /// (the CPU keeps the mapped values and expands them at each use), or nil where the device cannot, and the
    /// weight is taken in float32. Only the layer operations (`linear`, `conv2d`, `conv3x3Upsampled`, `conv1x1`)
    /// take such a weight.
    func upload(_ weight: HalfWeight) -> Tensor?
    /// A float32 layer weight (`host`) kept in half precision on this device (`--precision f16` with an F32 file),
    /// or nil where the backend does not convert weights (the CPU, whose f16 mode needs 16-bit weights in the file).
    func uploadHalf(_ host: Tensor) -> Tensor?
    /// The elements of `x` in host memory (waits for the work that makes them).
    func download(_ x: Tensor) -> [Float]
    /// Waits until every operation recorded so far has run (a GPU's queue; nothing to wait for on the CPU).
    func synchronize()
    /// What the device has done and holds (for `bench`, `/metrics` and `health`); nil on the CPU.
    var statistics: BackendStatistics? { get }
    /// Keeps up to `bytes` of freed activations for reuse by the next forward pass.
    func keepFreedActivations(upTo bytes: Int)
    /// Gives memory cached for reuse back to the system (between the stages of a generation and after it).
    func releaseCachedMemory()
    /// How many of `images` a memory-heavy stage (the autoencoder's decoder) takes in one pass when one image's
    /// largest activation is `activationBytesPerImage`: the device's memory policy, so the model states only what
    /// it needs. At least 1; the images' results are the same whichever number is chosen.
    func imagesPerPass(activationBytesPerImage: Int, images: Int) -> Int

    // MARK: Layers

    /// `x·Wᵀ + b` over the last dimension (`nn.Linear`); `rowIndependent`: each row's result the same whichever
    /// other rows come with it.
    func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, rowIndependent: Bool) -> Tensor
    /// `nn.Conv2d`, zero padding, square stride.
    func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Padding) -> Tensor
    /// A 3×3, stride-1, padding-1 convolution of x upsampled ×2 (nearest), without the upsampled tensor.
    func conv3x3Upsampled(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor
    /// `nn.Conv1d` with kernel size 1 on `[N, C, T]`.
    func conv1x1(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor
    /// Group normalization, then `·(1 + scale) + shift` from `modulation` (`[B, 2C]`) when given, then SiLU when
    /// `silu`, in one pass; a tensor passed as its last use may be normalized in its own storage.
    func groupNorm(
        _ x: consuming Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, modulation: Tensor?, silu: Bool
    ) -> Tensor
    /// Layer normalization over the last dimension.
    func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor
    /// T5's RMS normalization over the last dimension.
    func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float) -> Tensor
    /// `softmax(q·kᵀ·scale + mask)·v` for `[S, L, D]` slices, `mask` broadcast per item or per slice.
    func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: Tensor?) -> Tensor
    /// Attention over channels-first `[N, C, T]` queries, keys and values (the autoencoder's).
    func attentionChannelsFirst(q: Tensor, k: Tensor, v: Tensor, scale: Float) -> Tensor
    /// The UNet's attention: per head `[q | k | v]` rows of `qkv`, with the text keys and values first.
    func attentionChannelsFirst(qkv: Tensor, textKV: Tensor?, scale: Float) -> Tensor
    /// erf GELU.
    func gelu(_ x: Tensor) -> Tensor
    /// tanh-approximated GELU.
    func geluTanh(_ x: Tensor) -> Tensor
    /// `x·σ(x)`.
    func silu(_ x: Tensor) -> Tensor
    /// Nearest-neighbour ×2 upsampling of `[N, C, H, W]`.
    func upsampleNearest2x(_ x: Tensor) -> Tensor
    /// 2×2 average pooling, stride 2.
    func avgPool2x2(_ x: Tensor) -> Tensor

    // MARK: Element-wise and layout

    /// `a + b`.
    func add(_ a: Tensor, _ b: Tensor) -> Tensor
    /// `b += a`, in b's storage when b is its own (a residual add).
    func add(_ a: Tensor, into b: inout Tensor)
    /// `a · b` element by element.
    func mul(_ a: Tensor, _ b: Tensor) -> Tensor
    /// `x + v`, `v` (`[W]`) added to every row of the last dimension.
    func addRows(_ x: Tensor, _ v: Tensor) -> Tensor
    /// `a · s`.
    func scale(_ a: Tensor, by s: Float) -> Tensor
    /// `min(max(x, lower), upper)` element by element.
    func clamp(_ x: Tensor, lower: Float, upper: Float) -> Tensor
    /// Rows `ids` of the `[V, D]` table.
    func embedding(_ table: Tensor, ids: [Int]) -> Tensor
    /// Concatenation along `axis`.
    func concat(_ parts: [Tensor], axis: Int) -> Tensor
    /// The sub-tensor `range` along `axis`.
    func slice(_ x: Tensor, axis: Int, _ range: Range<Int>) -> Tensor
    /// `[N, L, H·Dh] → [N·H, L, Dh]`.
    func splitHeads(_ x: Tensor, heads: Int) -> Tensor
    /// `[N·H, L, Dh] → [N, L, H·Dh]`.
    func mergeHeads(_ x: Tensor, heads: Int) -> Tensor
    /// The last two dimensions swapped.
    func transposeLast2(_ x: Tensor) -> Tensor

    // MARK: Sampler operations

    /// `(c₀·t₀ + c₁·t₁ + …) / divisor`, summed left to right, each batch row `i` with its coefficients
    /// `coefficients[i]`: the samplers' linear steps (x0 from ε, DDIM and DPM-Solver updates, PLMS's multistep
    /// combinations, img2img's `q_sample`). Every term has the shape of `terms[0]`, `[B, ...]`.
    func weightedSum(_ terms: [Tensor], coefficients: [[Float]], dividedBy divisor: Float) -> Tensor
    /// Classifier-free guidance on the UNet's output `[2B, 2C, h, w]` (conditional rows, then unconditional):
    /// `ε = ε_u + g_i·(ε_c − ε_u)` on channels `0..<C`, and v, the conditional rows' channels `C..<2C`, unguided.
    func guidanceCombine(_ output: Tensor, scales: [Float]) -> (eps: Tensor, v: Tensor)
    /// The ancestral (`p_sample`, learned range) step: `mean = c1·x0 + c2·x`, `frac = (v + 1)/2`,
    /// `log σ² = frac·logVariance.upper + (1 − frac)·logVariance.lower`, and `mean + exp(½·log σ²)·noise` when
    /// `addNoise` (`mean` otherwise).
    func ancestralStep(
        x0: Tensor, x: Tensor, v: Tensor, noise: Tensor, c1: Float, c2: Float,
        logVariance: (lower: Float, upper: Float), addNoise: Bool
    ) -> Tensor
    /// Dynamic thresholding per image: `s` = the p-th percentile of |x0| over the image's values (numpy's linear
    /// interpolation), `s = max(s, 1)`, `x0 = clip(x0, −s, s)/s`. Images whose percentile is nil pass unchanged.
    func dynamicThreshold(_ x0: Tensor, percentiles: [Double?]) -> Tensor
    /// `x0·(1 − mask) + known·mask`; `known` `[1 or B, C, h, w]`, `mask` `[1 or B, 1, h, w]` broadcast over channels.
    func maskedBlend(_ x0: Tensor, known: Tensor, mask: Tensor) -> Tensor
    /// `x · mask` with `mask` `[B, 1, h, w]` broadcast over channels.
    func multiplyByMask(_ x: Tensor, _ mask: Tensor) -> Tensor
    /// A draw from the autoencoder's posterior, in the UNet's scale: `(mean + exp(½·logVariance)·noise)·scale`.
    func gaussianSample(mean: Tensor, logVariance: Tensor, noise: Tensor, scale: Float) -> Tensor
    /// The mean over the sequence of `[N, L, D]` of the positions whose `mask[n][l]` is not 0: `[N, D]`.
    func maskedMean(_ x: Tensor, mask: [[Int]]) -> Tensor
    /// Image `image` of decoded `[N, C, H, W]` in [-1, 1] as 8-bit HWC pixels, cropped to `width × height`:
    /// `(x + 1)·127.5`, rounded half to even, clamped to 0…255 (`process_images`). The one way images come back.
    func rgb8(_ images: Tensor, image: Int, width: Int, height: Int) -> [UInt8]
}

extension ComputeBackend {
    /// `linear` with rows computed together.
    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        linear(x, weight: weight, bias: bias, rowIndependent: false)
    }

    /// `attention` without a mask.
    public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float) -> Tensor {
        attention(q: q, k: k, v: v, scale: scale, mask: nil)
    }

    /// `weightedSum` with the same coefficients for every batch row.
    public func weightedSum(_ terms: [Tensor], _ coefficients: [Float], dividedBy divisor: Float = 1) -> Tensor {
        let rows = terms.first?.shape.first ?? 1
        return weightedSum(
            terms, coefficients: Array(repeating: coefficients, count: max(1, rows)), dividedBy: divisor)
    }
}
