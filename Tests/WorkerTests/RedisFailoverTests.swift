import Foundation
import JobQueue
import TestSupport
import Testing

@testable import Worker

/// Two real `serve` workers (embedded demo model) follow a Redis failover: a Sentinel set (master, replica, three
/// sentinels) or a three-master cluster, the master SIGKILLed mid-run. What the tests read back goes through a RESP
/// client of their own, straight from the surviving master, not through the product's client.
@Suite(.serialized) struct RedisFailoverTests {
    static let jobs = 36

    /// A small job for the demo model: 64×64, 3 steps.
    static func payload(_ id: String, seed: Int) -> [UInt8] {
        Array(#"{"id":"\#(id)","prompt":"a red circle","width":64,"height":64,"steps":3,"seed":\#(seed)}"#.utf8)
    }

    /// `serve` workers named `names` on the Redis at `url`, sharing one store.
    func startWorkers(
        _ names: [String], redis url: String, store: String, in dir: TemporaryDirectory
    ) throws
        -> [WorkerProcess]
    {
        try names.map { name in
            try WorkerProcess(
                name: name,
                command: [
                    "serve", "--redis", url, "--name", name, "--store", store, "--state-dir", dir.file("state-\(name)"),
                    "--http", "127.0.0.1:0",
                ], logDirectory: dir.path)
        }
    }

    /// The end of each worker's log, for failure messages.
    static func logs(_ workers: [WorkerProcess]) -> String {
        workers.map { "--- \($0.name):\n\($0.log.suffix(4000))" }.joined(separator: "\n")
    }

    @Test func serveWorkersFollowASentinelFailoverAndLoseNothing() throws {
        let ha = try SentinelSet(password: "s3cret")
        let dir = try TemporaryDirectory(prefix: "kd-failover")
        defer { dir.remove() }
        let url = "redis-sentinel://:s3cret@\(ha.sentinelList)/\(ha.masterName)"
        let store = dir.file("store")
        let workers = try startWorkers(["w1", "w2"], redis: url, store: store, in: dir)
        defer { for w in workers { w.kill9() } }
        let logs = { Self.logs(workers) }
        let master = ha.master
        try #require(
            eventually(timeout: 120) {
                workers.allSatisfy { (try? master.command(["EXISTS", "kd:worker:\($0.name)"]))?.integer == 1 }
            }, "workers not registered:\n\(logs())")

        // The producer goes through the sentinels too; its pushes wait for the replica (WAIT), so none is lost.
        let producer = JobProducer(client: RedisClient(try RedisConfiguration(url: url)))
        let ids = (0..<Self.jobs).map { "fo-\($0)" }
        for (n, id) in ids.enumerated() { try producer.submit(Self.payload(id, seed: n), queue: "default") }
        #expect(producer.client.topology.snapshot.replicas.count == 1)

        // A third of the jobs done: cut the replica off (the master's password changes under it, and its link is
        // killed), so the next finishes are acknowledged by the master alone (their WAIT times out) and die with it.
        try #require(
            eventually(timeout: 120) { ((try? master.command(["XLEN", "kd:events"]))?.integer ?? 0) >= Self.jobs / 3 },
            "jobs did not run:\n\(logs())")
        // … at a moment when a job is running: its claim reaches the replica, its finish will not.
        try #require(
            eventually(timeout: 30) {
                ids.contains { (try? master.command(["HGET", "kd:job:\($0)", "state"]))?.text == "running" }
            })
        let ports = try workers.map { w in
            try #require(
                master.command(["HGET", "kd:worker:\(w.name)", "http"]).text.flatMap(ServeConfiguration.hostPort)?.port)
        }
        let admin = try RESPConnection(port: master.port, timeout: 2)
        _ = try admin.send(["AUTH", "s3cret"])
        #expect(try admin.send(["CONFIG", "SET", "requirepass", "changed"]) == .simple("OK"))
        #expect(try admin.send(["CLIENT", "KILL", "TYPE", "replica"]) == .integer(1))
        func eventsOnMaster() -> Int {
            guard let c = try? RESPConnection(port: master.port, timeout: 1), (try? c.send(["AUTH", "changed"])) != nil
            else { return 0 }
            return (try? c.send(["XLEN", "kd:events"]))?.integer ?? 0
        }
        let beforeCut = eventsOnMaster()
        #expect(
            eventually(timeout: 30) { eventsOnMaster() >= beforeCut + 2 }, "no finish while the replica was cut off")
        // … and a worker whose WAIT timed out has moved on, leaving the finished jobs in its processing list on
        // the replica.
        #expect(
            eventually(timeout: 30) {
                ports.contains { port in
                    let text = (try? httpGet(port: port, path: "/metrics").1) ?? ""
                    return text.split(separator: "\n").contains {
                        $0.hasPrefix("kd_redis_wait_timeouts_total ")
                            && (Double($0.split(separator: " ").last ?? "") ?? 0) >= 1
                    }
                }
            }, "no WAIT timed out")
        // The jobs whose final events only the old master has now.
        var lost: Set<String> = []
        if let c = try? RESPConnection(port: master.port, timeout: 1), (try? c.send(["AUTH", "changed"])) != nil,
            let entries = (try? c.send(["XRANGE", "kd:events", "-", "+"]))?.array
        {
            for entry in entries.dropFirst(beforeCut) {
                guard let text = entry.array?.last?.array?.last?.text,
                    let id = (try? JSONValue.parse(Array(text.utf8)))?["id"]?.stringValue
                else { continue }
                lost.insert(id)
            }
        }
        let oldMaster = master.address
        master.kill9()
        let killed = Date()

        // The sentinels promote the replica; the workers find it and carry on.
        try #require(
            eventually(timeout: 60) { ha.masterAddress().map { $0 != oldMaster } ?? false }, "no promotion")
        let promoted = Date()
        let newMaster = try #require(ha.node(at: ha.masterAddress() ?? ""))
        #expect(newMaster.address == ha.replica.address)
        let allDone = eventually(timeout: 180) {
            ids.allSatisfy { (try? newMaster.command(["HGET", "kd:job:\($0)", "state"]))?.text == "done" }
        }
        #expect(allDone, "not every job finished after the failover:\n\(logs())")

        // Exactly one final event per job in the surviving stream, every PNG there, no processing list left over.
        let entries = try #require(try newMaster.command(["XRANGE", "kd:events", "-", "+"]).array)
        var events: [String: Int] = [:]
        var afterPromotion: [String: Int] = [:]  // worker → first event's ms after the promotion
        var redone: [String] = []
        let promotedMs = Int(promoted.timeIntervalSince1970 * 1000)
        let killedMs = Int(killed.timeIntervalSince1970 * 1000)
        for entry in entries {
            guard let pair = entry.array, pair.count == 2, let streamId = pair[0].text, let fields = pair[1].array,
                fields.count == 2, let text = fields[1].text
            else {
                Issue.record("unexpected stream entry \(entry)")
                continue
            }
            let event = try JSONValue.parse(Array(text.utf8))
            let id = event["id"]?.stringValue ?? "?"
            events[id, default: 0] += 1
            #expect(event["state"] == .string("done"), "\(text)")
            guard case .array(let images)? = event["images"], !images.isEmpty else {
                Issue.record("no images in \(text)")
                continue
            }
            for image in images {
                let path = (store as NSString).appendingPathComponent(image["path"]?.stringValue ?? "?")
                #expect(FileManager.default.fileExists(atPath: path), "missing \(path)")
            }
            let ms = Int(streamId.split(separator: "-")[0]) ?? 0
            if lost.contains(id) {
                #expect(ms >= killedMs, "\(id)'s event predates the kill: its finish was not lost after all")
                redone.append(id)
            }
            if ms >= promotedMs, let worker = event["worker"]?.stringValue, afterPromotion[worker] == nil {
                afterPromotion[worker] = ms - promotedMs
            }
        }
        #expect(events.keys.sorted() == ids.sorted(), "ids in the stream: \(events.keys.sorted())")
        #expect(events.values.allSatisfy { $0 == 1 }, "events per job: \(events.filter { $0.value != 1 })")
        #expect(
            eventually(timeout: 10) {
                workers.allSatisfy {
                    (try? newMaster.command(["LLEN", "kd:processing:\($0.name)"]))?.integer == 0
                }
            })
        #expect(((try? newMaster.command(["LLEN", "kd:queue:default"]))?.integer ?? -1) == 0)

        // Finishes that died with the old master were done again on the new one.
        #expect(!lost.isEmpty && redone.count == lost.count, "lost \(lost.sorted()), redone \(redone)")
        // Which way each came back depends on timing: a finish whose reply was lost is sent again; one claimed before
        // the cut whose worker had moved on was still in its processing list on the promoted replica and was handed
        // back when the worker reconnected. Either way it is done once (above) and no processing list is left (a
        // hand-back that never happened would leave its job there, unfinished); how many went each way is reported.
        let handedBack = lost.filter {
            (try? newMaster.command(["HGET", "kd:job:\($0)", "recovered_by"]))?.text == "self"
        }
        print("failover: \(lost.count) finishes lost with the old master, \(handedBack.count) of them handed back")

        // Both workers followed (their heartbeat says so) and counted it.
        for w in workers {
            var hash: [String: String] = [:]
            let followed = eventually(timeout: 15) {
                let fields = (try? newMaster.command(["HGETALL", "kd:worker:\(w.name)"]))?.array ?? []
                for i in stride(from: 0, to: fields.count - 1, by: 2) {
                    hash[fields[i].text ?? ""] = fields[i + 1].text
                }
                return hash["redis_master"] == newMaster.address && hash["redis_failovers"] == "1"
            }
            #expect(followed, "\(w.name): \(hash)")
            if let port = hash["http"].flatMap(ServeConfiguration.hostPort)?.port {
                let metrics = try httpGet(port: port, path: "/metrics").1
                #expect(metrics.contains("kd_redis_failovers_total 1"), "\(w.name) metrics")
            } else {
                Issue.record("\(w.name): no http field")
            }
        }
        // `health` through the sentinels names the new master and the failover the workers followed.
        let health = try WorkerProcess(
            name: "health", command: ["health", "--redis", url], logDirectory: dir.path, captureOutput: true)
        #expect(eventually(timeout: 30) { !health.isRunning })
        health.terminate()
        #expect(health.output.contains("redis: master \(newMaster.address) (master \"\(ha.masterName)\" via sentinels"))
        #expect(health.output.contains("last failover followed: "), "\(health.output)")
        #expect(health.output.contains("\(oldMaster) → \(newMaster.address)"), "\(health.output)")
        let promotion = promoted.timeIntervalSince(killed)
        print(
            String(
                format:
                    "sentinel failover: promotion %.1f s after SIGKILL; first job finished on the new master %@ after it; "
                    + "%d finishes lost with the old master were redone (%@), %d of them handed back first",
                promotion,
                afterPromotion.sorted { $0.key < $1.key }.map { "\($0.key) \(Double($0.value) / 1000) s" }.joined(
                    separator: ", "),
                redone.count, redone.joined(separator: ","), handedBack.count))
        #expect(afterPromotion.count == 2, "a worker finished nothing after the promotion:\n\(logs())")
        #expect(afterPromotion.values.allSatisfy { $0 < 15_000 }, "resumed too slowly: \(afterPromotion)")
        for w in workers { #expect(w.isRunning, "\(w.name) exited:\n\(w.log.suffix(3000))") }
    }

    /// A cluster of three masters with a replica each; two `serve` workers given `redis://seeds?cluster=1` (keys
    /// `{kd}:…`, one slot); the master of that slot SIGKILLed mid-run; its replica promoted by the cluster.
    @Test func serveWorkersFollowAClusterFailover() throws {
        let cluster = try ClusterSet()
        let keys = KeySpace().forCluster()
        let slot = keys.slot
        let dir = try TemporaryDirectory(prefix: "kd-cluster")
        defer { dir.remove() }
        let url = "redis://\(cluster.seeds)?cluster=1"
        let store = dir.file("store")
        let workers = try startWorkers(["c1", "c2"], redis: url, store: store, in: dir)
        defer { for w in workers { w.kill9() } }
        let logs = { Self.logs(workers) }
        let master = try #require(cluster.master(ofSlot: slot).flatMap(cluster.node(at:)))
        try #require(
            eventually(timeout: 120) {
                workers.allSatisfy { (try? master.command(["EXISTS", keys.worker($0.name)]))?.integer == 1 }
            }, "workers not registered on \(master.address) (slot \(slot)):\n\(logs())")

        var configuration = try RedisConfiguration(url: url)
        configuration.clusterSlot = slot
        let producer = JobProducer(client: RedisClient(configuration), keys: keys)
        let ids = (0..<Self.jobs).map { "cl-\($0)" }
        for (n, id) in ids.enumerated() { try producer.submit(Self.payload(id, seed: n), queue: "default") }
        #expect(producer.client.connectedEndpoint?.description == master.address)

        try #require(
            eventually(timeout: 120) { ((try? master.command(["XLEN", keys.events]))?.integer ?? 0) >= Self.jobs / 3 },
            "jobs did not run:\n\(logs())")
        let oldMaster = master.address
        master.kill9()
        let killed = Date()
        try #require(
            eventually(timeout: 60) { cluster.master(ofSlot: slot).map { $0 != oldMaster } ?? false }, "no promotion")
        let promoted = Date()
        let newMaster = try #require(cluster.master(ofSlot: slot).flatMap(cluster.node(at:)))
        let allDone = eventually(timeout: 180) {
            ids.allSatisfy { (try? newMaster.command(["HGET", keys.job($0), "state"]))?.text == "done" }
        }
        #expect(allDone, "not every job finished after the failover:\n\(logs())")

        let events = try Self.survivingEvents(on: newMaster, stream: keys.events, store: store)
        var perJob: [String: Int] = [:]
        for e in events { perJob[e.id, default: 0] += 1 }
        #expect(perJob.keys.sorted() == ids.sorted(), "ids in the stream: \(perJob.keys.sorted())")
        #expect(perJob.values.allSatisfy { $0 == 1 }, "events per job: \(perJob.filter { $0.value != 1 })")
        #expect(
            eventually(timeout: 10) {
                workers.allSatisfy { (try? newMaster.command(["LLEN", keys.processing($0.name)]))?.integer == 0 }
            })
        #expect(((try? newMaster.command(["LLEN", keys.queue("default")]))?.integer ?? -1) == 0)
        let promotedMs = Int(promoted.timeIntervalSince1970 * 1000)
        var afterPromotion: [String: Int] = [:]
        for e in events where e.ms >= promotedMs && afterPromotion[e.worker] == nil {
            afterPromotion[e.worker] = e.ms - promotedMs
        }
        print(
            String(
                format:
                    "cluster failover: promotion %.1f s after SIGKILL; first job finished on the new master %@ after it",
                promoted.timeIntervalSince(killed),
                afterPromotion.sorted { $0.key < $1.key }.map { "\($0.key) \(Double($0.value) / 1000) s" }.joined(
                    separator: ", ")))
        #expect(!afterPromotion.isEmpty, "no job finished after the promotion:\n\(logs())")
        #expect(afterPromotion.values.allSatisfy { $0 < 15_000 }, "resumed too slowly: \(afterPromotion)")
        for w in workers { #expect(w.isRunning, "\(w.name) exited:\n\(w.log.suffix(3000))") }
    }

    /// The final events in `stream` on `node`, each checked: state done, every image file present in `store`.
    static func survivingEvents(
        on node: RedisNode, stream: String, store: String
    ) throws -> [(id: String, ms: Int, worker: String)] {
        var out: [(id: String, ms: Int, worker: String)] = []
        for entry in try #require(try node.command(["XRANGE", stream, "-", "+"]).array) {
            guard let pair = entry.array, pair.count == 2, let streamId = pair[0].text,
                let text = pair[1].array?.last?.text
            else {
                Issue.record("unexpected stream entry \(entry)")
                continue
            }
            let event = try JSONValue.parse(Array(text.utf8))
            #expect(event["state"] == .string("done"), "\(text)")
            guard case .array(let images)? = event["images"], !images.isEmpty else {
                Issue.record("no images in \(text)")
                continue
            }
            for image in images {
                let path = (store as NSString).appendingPathComponent(image["path"]?.stringValue ?? "?")
                #expect(FileManager.default.fileExists(atPath: path), "missing \(path)")
            }
            out.append(
                (
                    event["id"]?.stringValue ?? "?", Int(streamId.split(separator: "-")[0]) ?? 0,
                    event["worker"]?.stringValue ?? "?"
                ))
        }
        return out
    }
}
