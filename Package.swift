// swift-tools-version:6.0
import PackageDescription

// The kernels (`Tensor`) are compiled for AVX2 + FMA (Haswell, Zen 1 and later, x86-64-v3) on x86-64: their SIMD
// code is otherwise limited to SSE2, and element-wise work (softmax, norms, Winograd transforms) took twice as long.
// The executable checks the processor before any kernel runs. They (and the C kernels) are optimised in debug builds
// too: unoptimised SIMD code is a hundred times slower and made the conformance tests take minutes.
#if arch(x86_64)
    let kernelSettings: [SwiftSetting] = [
        .unsafeFlags(["-target-cpu", "haswell"]), .unsafeFlags(["-O"], .when(configuration: .debug)),
    ]
#else
    let kernelSettings: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]
#endif

// C libraries are wrapped once each, as system-library targets with a module map and a shim header;
// exactly one Swift module imports each of them (see DESIGN.md §1 of the project contracts).
let package = Package(
    name: "kandinsky-worker",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kandinsky-worker", targets: ["kandinsky-worker"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.12.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    ],
    targets: [
        // MARK: C libraries
        .systemLibrary(
            name: "CHiredis",
            providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]),
        .systemLibrary(
            name: "CSystemd", pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]),
        // The Vulkan headers only: the loader is opened at run time (VK_NO_PROTOTYPES), nothing is linked.
        .systemLibrary(
            name: "CVulkan",
            providers: [.apt(["libvulkan-dev"])]),
        // The compute shaders as SPIR-V, generated from Shaders/vulkan by Ops/gen-shaders (CI checks it is current).
        .target(name: "CVulkanShaders"),
        .target(
            name: "CSentencePiece",
            cxxSettings: [.unsafeFlags(["-std=c++17"])],
            linkerSettings: [.linkedLibrary("sentencepiece")]),

        // MARK: Swift modules
        // One JSON parser and writer for every document: safetensors headers, model.json, jobs and events.
        .target(name: "JSON"),
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),
        .target(name: "Tensor", dependencies: ["COpenBLAS", "CKernels", "JSON"], swiftSettings: kernelSettings),
        // The Vulkan compute backend: devices, memory, pipelines and every operation of ComputeBackend as shaders.
        .target(name: "VulkanBackend", dependencies: ["Tensor", "CVulkan", "CVulkanShaders"]),
        // The generation vocabulary (samplers, defaults and their merge, request limits, the PNG parameters text):
        // one set of types for the model, the queue, the configuration and the command line.
        .target(name: "Generation"),
        .target(
            name: "Kandinsky", dependencies: ["Tensor", "Generation", "JSON", "CSentencePiece"],
            resources: [.copy("Resources")]
        ),
        .target(name: "ModelConversion", dependencies: ["Tensor", "JSON", "ZIPFoundation"]),
        // The Redis client (hiredis): connections, Sentinel and Cluster topology, retries; a private redis-server.
        .target(name: "Redis", dependencies: ["CHiredis"]),
        .target(
            name: "JobQueue",
            dependencies: [
                "Redis", "Generation", "JSON", "ResultStore", .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .target(name: "ResultStore", dependencies: ["CPNG", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "Systemd", dependencies: ["CSystemd", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "Worker",
            dependencies: [
                "Tensor", "Generation", "Kandinsky", "JobQueue", "ResultStore", "Systemd", "VulkanBackend",
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The bench harness: each benchmark a function of plain options, returning its figures and its JSON report
        // (`kandinsky-worker bench` only parses arguments and prints; the tests call it directly).
        .target(name: "Bench", dependencies: ["Tensor", "JSON", "Kandinsky", "Redis", "JobQueue", "Worker"]),
        .executableTarget(
            name: "kandinsky-worker",
            dependencies: [
                "Tensor", "Generation", "JSON", "Kandinsky", "ModelConversion", "JobQueue", "ResultStore", "Systemd",
                "Worker", "Bench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // MARK: Tests
        // Shared by the test targets: where the committed fixtures are, and a real redis-server per test.
        .target(name: "TestSupport", dependencies: ["Redis"], path: "Tests/TestSupport"),
        // Test doubles for the worker: a generator scripted by the job's metadata, and `kd-test-worker`, a worker
        // process built on it that the multi-process tests and Ops/loadgen and Ops/chaos kill and restart.
        .target(
            name: "WorkerTesting", dependencies: ["Worker", "JobQueue", "ResultStore"], path: "Tests/WorkerTesting"),
        .executableTarget(
            name: "kd-test-worker",
            dependencies: [
                "WorkerTesting", "Worker", "JobQueue", "ResultStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tests/TestWorker"),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TestSupport"]),
        .testTarget(name: "VulkanTests", dependencies: ["VulkanBackend", "Tensor", "TestSupport"]),
        .testTarget(name: "GenerationTests", dependencies: ["Generation"]),
        .testTarget(name: "KandinskyTests", dependencies: ["Kandinsky", "Tensor", "TestSupport", "VulkanBackend"]),
        .testTarget(name: "ModelConversionTests", dependencies: ["ModelConversion", "JSON", "Tensor", "TestSupport"]),
        .testTarget(name: "JobQueueTests", dependencies: ["JobQueue", "Redis", "TestSupport"]),
        .testTarget(name: "ResultStoreTests", dependencies: ["ResultStore", "TestSupport"]),
        .testTarget(
            name: "WorkerTests",
            dependencies: [
                "Worker", "WorkerTesting", "JobQueue", "Kandinsky", "ResultStore", "Tensor", "TestSupport",
                "VulkanBackend", .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "SystemdTests", dependencies: ["Systemd", "TestSupport"]),
        .testTarget(
            name: "BenchTests",
            dependencies: ["Bench", "JobQueue", "Kandinsky", "Redis", "Tensor", "TestSupport", "VulkanBackend"]),
    ]
)
