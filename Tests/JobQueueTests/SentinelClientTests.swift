import Foundation
import TestSupport
import Testing

@testable import JobQueue
@testable import Redis

/// The client's high-availability side: URLs, discovery through real sentinels, clear errors for what is wrong, the
/// shared topology state, and the cluster key space.
@Suite(.serialized) struct SentinelClientTests {
    @Test func sentinelAndClusterURLsParse() throws {
        let s = try RedisConfiguration(
            url: "redis-sentinel://alice:p%40ss@10.0.0.1:26379,10.0.0.2,[::1]:26380/main?db=2&sentinel_password=x%26y")
        #expect(
            s.mode
                == .sentinel(
                    masterName: "main",
                    sentinels: [
                        .tcp(host: "10.0.0.1", port: 26379), .tcp(host: "10.0.0.2", port: 26379),
                        .tcp(host: "::1", port: 26380),
                    ]))
        #expect(s.username == "alice" && s.password == "p@ss" && s.database == 2 && s.sentinelPassword == "x&y")
        #expect(s.waitReplicas == nil)
        let c = try RedisConfiguration(url: "redis://:pw@127.0.0.1:7000,127.0.0.1:7001?cluster=1&wait_replicas=1")
        #expect(c.mode == .cluster(seeds: [.tcp(host: "127.0.0.1", port: 7000), .tcp(host: "127.0.0.1", port: 7001)]))
        #expect(c.password == "pw" && c.username == nil && c.waitReplicas == 1)
        #expect(try RedisConfiguration(url: "redis://h:1/3?wait_timeout_ms=250").waitTimeout == .milliseconds(250))
        // What is wrong is named.
        for (url, words) in [
            ("redis-sentinel://127.0.0.1:26379", "no master name"),
            ("redis-sentinel://127.0.0.1:notaport/m", "is not HOST[:PORT]"),
            ("redis://a:1,b:2", "need ?cluster=1"),
            ("redis://a:1/2?cluster=1", "database 0 only"),
            ("redis://a:1?wait_replicas=-1", "wait_replicas=-1"),
        ] {
            do {
                _ = try RedisConfiguration(url: url)
                Issue.record("\(url) parsed")
            } catch {
                #expect(error.code == .configuration && error.message.contains(words), "\(url): \(error)")
            }
        }
        #expect(
            RedisConfiguration.redacted("redis-sentinel://u:secret@h:1/m?sentinel_password=x&db=1")
                == "redis-sentinel://u:***@h:1/m?sentinel_password=***&db=1")
    }

    @Test func clusterKeySpaceSharesOneSlot() {
        let plain = KeySpace()
        #expect(!plain.isSingleSlot && plain.queue("default") == "kd:queue:default")
        let cluster = plain.forCluster()
        #expect(cluster.queue("default") == "{kd}:queue:default")
        let keys = [
            cluster.queue("a"), cluster.queue("b"), cluster.processing("w"), cluster.job("x"), cluster.events,
            cluster.delayed, cluster.dead, cluster.workers, cluster.worker("w"), cluster.cancel("x"),
        ]
        #expect(Set(keys.map(KeySpace.clusterSlot)).count == 1 && cluster.slot == KeySpace.clusterSlot("kd"))
        // A tag already chosen is kept.
        #expect(KeySpace(prefix: "kd:", hashTag: "img").forCluster() == KeySpace(prefix: "kd:", hashTag: "img"))
        #expect(KeySpace(prefix: "{app}:").forCluster().queue("q") == "{app}:queue:q")
    }

    @Test func topologyStateCountsFailoversAndTimeWithoutMaster() {
        let t = RedisTopologyState()
        let a = RedisEndpoint.tcp(host: "10.0.0.1", port: 6379)
        let b = RedisEndpoint.tcp(host: "10.0.0.2", port: 6379)
        let e0 = t.connected(to: a, replicas: ["10.0.0.2:6379"], nowMs: 1000)
        t.connected(to: a, replicas: [], nowMs: 1100)
        #expect(t.snapshot.failovers == 0 && t.epoch == e0)
        t.lost(nowMs: 2000)
        t.lost(nowMs: 2500)  // a second client: the outage started at the first
        #expect(t.snapshot.withoutMasterSinceMs == 2000)
        let e1 = t.connected(to: b, replicas: [], nowMs: 5500)
        let s = t.snapshot
        #expect(s.failovers == 1 && s.lastFailoverMs == 5500 && s.previousMaster == a && s.master == b)
        #expect(s.withoutMasterSeconds == 3.5 && s.withoutMasterSinceMs == nil && e1 == e0 + 1)
        t.invalidate(current: a)  // stale news: no change
        #expect(t.epoch == e1)
        t.invalidate(current: b)
        #expect(t.epoch == e1 + 1)
    }

    @Test func findsTheMasterThroughSentinelsAndChecksItsRole() throws {
        let ha = try SentinelSet()
        // The first sentinel listed is down: the next one answers.
        let url = "redis-sentinel://127.0.0.1:\(RedisServer.freePort()),\(ha.sentinelList)/\(ha.masterName)"
        let client = RedisClient(try RedisConfiguration(url: url))
        try client.command(["SET", "k", "v"])
        #expect(client.connectedEndpoint == .tcp(host: "127.0.0.1", port: ha.master.port))
        #expect(client.topology.snapshot.replicas == [ha.replica.address])
        #expect(try client.replicasToWaitFor() == 1)
        #expect(try client.waitForReplicas() == 1)
        #expect(try ha.replica.command(["GET", "k"]).text == "v")
        // Writing to the replica directly: READONLY, which drops the connection (with sentinels, to ask again).
        let replicaOnly = RedisClient(RedisConfiguration(.tcp(host: "127.0.0.1", port: ha.replica.port)))
        do {
            try replicaOnly.command(["SET", "k", "w"])
            Issue.record("a replica accepted a write")
        } catch {
            #expect(error.kind == "READONLY" && error.dropsConnection && error.isTransient)
        }
    }

    @Test func wrongSentinelsMasterNameAndPasswordsAreNamedWithoutABusyLoop() throws {
        let ha = try SentinelSet(password: "right", sentinelPassword: "watch")
        let name = ha.masterName
        let good = "\(ha.sentinelList)/\(name)"
        func failure(_ url: String) -> RedisError? {
            do {
                try RedisClient(try RedisConfiguration(url: url)).connect()
                return nil
            } catch { return error }
        }
        // Nothing listens at the sentinels' addresses: each is named, and retrying backs off.
        let (p1, p2) = (RedisServer.freePort(), RedisServer.freePort())
        let nobody = "redis-sentinel://:right@127.0.0.1:\(p1),127.0.0.1:\(p2)/\(name)?sentinel_password=watch"
        let e1 = try #require(failure(nobody))
        #expect(
            e1.code == .connection && e1.message.contains("127.0.0.1:\(p1)") && e1.message.contains("127.0.0.1:\(p2)"))
        var config = try RedisConfiguration(url: nobody)
        config.backoff = Backoff(initial: .milliseconds(50), cap: .milliseconds(400), floor: .milliseconds(20))
        let client = RedisClient(config)
        let start = ContinuousClock.now
        var attempts = 0
        #expect(throws: RedisError.self) {
            try client.retrying(shouldStop: { start.duration(to: .now) > .seconds(2) }) { c throws(RedisError) in
                attempts += 1
                return try c.command(["PING"])
            }
        }
        // Full-jitter backoff capped at 400 ms gives some 5-40 attempts in 2 s; a busy loop would make thousands.
        #expect(attempts >= 2 && attempts <= 60, "\(attempts) attempts in 2 s")

        // A master name no sentinel knows: a configuration error (not retried), naming it.
        let e2 = try #require(failure("redis-sentinel://:right@\(ha.sentinelList)/nosuch?sentinel_password=watch"))
        #expect(e2.code == .configuration && !e2.isTransient && e2.message.contains(#""nosuch""#), "\(e2)")
        // The sentinels' password wrong or missing.
        let e3 = try #require(failure("redis-sentinel://:right@\(good)?sentinel_password=bad"))
        #expect(e3.code == .server && !e3.isTransient && e3.message.contains("sentinel_password"), "\(e3)")
        #expect(e3.kind == "WRONGPASS")
        let e4 = try #require(failure("redis-sentinel://:right@\(good)"))
        #expect(e4.code == .server && !e4.isTransient && e4.kind == "NOAUTH", "\(e4)")
        // The master's password wrong: named with the master's address.
        let e5 = try #require(failure("redis-sentinel://:bad@\(good)?sentinel_password=watch"))
        #expect(e5.kind == "WRONGPASS" && !e5.isTransient && e5.message.contains(ha.master.address), "\(e5)")
        // All right.
        #expect(failure("redis-sentinel://:right@\(good)?sentinel_password=watch") == nil)
    }
}

/// The client against a real three-master cluster: `MOVED` and `ASK` followed, scripts run on the slot's master.
@Suite(.serialized) struct ClusterClientTests {
    @Test func followsMovedAndAskRedirections() throws {
        let cluster = try ClusterSet()
        let keys = KeySpace().forCluster()
        let owner = try #require(cluster.master(ofSlot: keys.slot))
        // Seeded with a master that does not own the slot, and not told the slot: the first keyed command is MOVED.
        let masters = cluster.nodes.filter { (try? $0.command(["ROLE"]))?.array?.first?.text == "master" }
        let other = try #require(masters.first { $0.address != owner })
        let client = RedisClient(try RedisConfiguration(url: "redis://\(other.address)?cluster=1"))
        try client.command(["SET", keys.job("a"), "1"])
        #expect(client.connectedEndpoint?.description == owner)
        #expect(try cluster.node(at: owner)!.command(["GET", keys.job("a")]).text == "1")
        // Scripts (EVALSHA, loaded on NOSCRIPT) and WAIT go where the keys are.
        let queue = ReliableQueue(
            client: client, configuration: QueueConfiguration(queues: ["default"], worker: "w").with(keys: keys))
        try JobProducer(client: client, keys: keys).submit(Array(#"{"id":"j1","prompt":"p"}"#.utf8), queue: "default")
        #expect(try queue.take(max: 1, block: false).count == 1)

        // Migrating the slot to another master: a key not yet moved answers ASK on the source; the client asks the
        // target once (ASKING) and stays on the source.
        let source = try #require(cluster.node(at: owner))
        let target = other
        let sourceId = try #require(source.command(["CLUSTER", "MYID"]).text)
        let targetId = try #require(target.command(["CLUSTER", "MYID"]).text)
        #expect(try target.command(["CLUSTER", "SETSLOT", String(keys.slot), "IMPORTING", sourceId]) == .simple("OK"))
        #expect(try source.command(["CLUSTER", "SETSLOT", String(keys.slot), "MIGRATING", targetId]) == .simple("OK"))
        #expect(try source.command(["SET", keys.job("raw"), "2"]).isAsk)
        try client.command(["SET", keys.job("new"), "2"])
        let importing = try RESPConnection(port: target.port, timeout: 2)
        #expect(try importing.send(["ASKING"]) == .simple("OK"))
        #expect(try importing.send(["GET", keys.job("new")]) == .bulk("2"))
        #expect(client.connectedEndpoint?.description == owner)
        // Finish the migration: every key moves, the slot is the target's; the next command is MOVED there.
        let moved = try #require(source.command(["CLUSTER", "GETKEYSINSLOT", String(keys.slot), "1000"]).array)
        if !moved.isEmpty {
            _ = try source.command(
                ["MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "KEYS"] + moved.compactMap(\.text))
        }
        for node in masters {
            _ = try node.command(["CLUSTER", "SETSLOT", String(keys.slot), "NODE", targetId])
        }
        #expect(try client.command(["GET", keys.job("a")]).text == "1")
        #expect(try client.command(["GET", keys.job("new")]).text == "2")
        #expect(client.connectedEndpoint?.description == target.address)
    }
}

extension RESP {
    fileprivate var isAsk: Bool { if case .error(let m) = self { return m.hasPrefix("ASK ") } else { return false } }
}

extension QueueConfiguration {
    fileprivate func with(keys: KeySpace) -> QueueConfiguration {
        var c = self
        c.keys = keys
        return c
    }
}
