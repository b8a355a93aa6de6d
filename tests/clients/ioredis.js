// ioredis against a redis-protocol server, used as ioredis's README shows it (defaults: the
// INFO ready check on, no overrides). Usage: node ioredis.js HOST PORT. Prints one line per
// case and exits non-zero on the first failure.
"use strict";
const assert = require("assert/strict");
const crypto = require("crypto");
const Redis = require("ioredis");

const [host, port] = [process.argv[2], Number(process.argv[3])];

async function main() {
  const redis = new Redis(port, host);
  const cases = [];
  const test = (name, fn) => cases.push([name, fn]);

  test("connect", async () => {
    assert.equal(await redis.ping(), "PONG");
    assert.equal(redis.status, "ready");
    console.log(`   ioredis ${require("ioredis/package.json").version}`);
  });

  test("set and get", async () => {
    assert.equal(await redis.set("foo", "bar"), "OK");
    assert.equal(await redis.get("foo"), "bar");
    assert.equal(await redis.get("missing"), null);
  });

  test("string and key commands", async () => {
    await redis.del("n", "f", "s", "s:1", "s:2", "s:3");
    assert.equal(await redis.incr("n"), 1);
    assert.equal(await redis.incrby("n", 10), 11);
    assert.equal(await redis.decr("n"), 10);
    assert.equal(await redis.decrby("n", 3), 7);
    assert.equal(await redis.incrbyfloat("f", 1.5), "1.5");
    assert.equal(await redis.append("s", "ab"), 2);
    assert.equal(await redis.strlen("s"), 2);
    assert.equal(await redis.getdel("s"), "ab");
    assert.equal(await redis.setnx("s", "1"), 1);
    assert.equal(await redis.setnx("s", "2"), 0);
    assert.equal(await redis.mset("s:1", "a", "s:2", "b", "s:3", "c"), "OK");
    assert.equal(await redis.msetnx("s:1", "x", "s:9", "y"), 0);
    assert.deepEqual(await redis.mget("s:1", "s:2", "nope"), ["a", "b", null]);
    assert.equal(await redis.type("s:1"), "string");
    assert.deepEqual((await redis.keys("s:*")).sort(), ["s:1", "s:2", "s:3"]);
    const seen = [];
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", "s:*", "COUNT", 2);
      seen.push(...keys);
      cursor = next;
    } while (cursor !== "0");
    assert.deepEqual(seen.sort(), ["s:1", "s:2", "s:3"]);
    assert.equal(await redis.set("s:1", "z", "GET"), "a");
    assert.equal(await redis.exists("s:1", "s:2", "nope"), 2);
    await assert.rejects(redis.incr("s:1"), /not an integer/);
    assert.equal(await redis.echo("hi"), "hi");
  });

  test("pipeline of 3000 commands, answers in order", async () => {
    await redis.del("p:counter");
    const pipe = redis.pipeline();
    for (let i = 0; i < 1000; i++) {
      pipe.set(`p:${i}`, i).get(`p:${i}`).incr("p:counter");
    }
    const replies = await pipe.exec();
    assert.equal(replies.length, 3000);
    for (let i = 0; i < 1000; i++) {
      assert.deepEqual(replies[3 * i], [null, "OK"]);
      assert.deepEqual(replies[3 * i + 1], [null, String(i)]);
      assert.deepEqual(replies[3 * i + 2], [null, i + 1]);
    }
  });

  test("binary-safe keys and values", async () => {
    const every = Buffer.from([...Array(256).keys()]);
    const pairs = [
      [Buffer.concat([Buffer.from("k\r\n\0"), every]), Buffer.concat([every, every, Buffer.from("\r\n\0")])],
      [Buffer.from("\r\n"), Buffer.from("\0")],
      [Buffer.from("\0"), Buffer.from("\r\n*1\r\n$4\r\nPING\r\n")],
      [every, Buffer.alloc(0)],
    ];
    for (const [key, value] of pairs) {
      assert.equal(await redis.set(key, value), "OK");
      assert.ok(value.equals(await redis.getBuffer(key)), key.toString("hex"));
    }
    assert.equal(await redis.getBuffer(Buffer.from("k\r\n\0")), null);
  });

  test("a 1 MiB value", async () => {
    const value = crypto.randomBytes(1 << 20);
    assert.equal(await redis.set("big", value), "OK");
    assert.ok(value.equals(await redis.getBuffer("big")));
    assert.equal(await redis.strlen("big"), 1 << 20);
  });

  test("32 concurrent connections from one pool", async () => {
    await redis.del("c:counter");
    const pool = Array.from({ length: 32 }, () => new Redis(port, host));
    await Promise.all(pool.map((c) => c.ping()));
    const info = await redis.info("clients");
    const connected = Number(/connected_clients:(\d+)/.exec(info)[1]);
    assert.ok(connected >= 33, info);
    await Promise.all(
      pool.map(async (c, i) => {
        for (let j = 0; j < 100; j++) {
          await c.incr("c:counter");
          assert.equal(await c.set(`c:${i}`, j), "OK");
          assert.equal(await c.get(`c:${i}`), String(j));
        }
      }),
    );
    assert.equal(await redis.get("c:counter"), "3200");
    pool.forEach((c) => c.disconnect());
  });

  test("expiry", async () => {
    assert.equal(await redis.set("e:1", "v", "EX", 100), "OK");
    const ttl = await redis.ttl("e:1");
    assert.ok(ttl >= 99 && ttl <= 100, ttl);
    assert.equal(await redis.persist("e:1"), 1);
    assert.equal(await redis.ttl("e:1"), -1);
    assert.equal(await redis.expire("e:1", 50), 1);
    assert.equal(await redis.ttl("e:missing"), -2);
    await redis.set("e:2", "v");
    assert.equal(await redis.pexpireat("e:2", Date.now() - 1000), 1);
    assert.equal(await redis.get("e:2"), null);
    assert.equal(await redis.set("e:3", "v", "PX", 20), "OK");
    const deadline = Date.now() + 5000;
    while ((await redis.exists("e:3")) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(await redis.get("e:3"), null, "e:3 did not expire");
  });

  test("a transaction", async () => {
    await redis.del("t:a");
    const replies = await redis.multi().set("t:a", 1).incr("t:a").incrby("t:a", 5).get("t:a").exec();
    assert.deepEqual(replies, [[null, "OK"], [null, 2], [null, 7], [null, "7"]]);
    const failed = await redis.multi().set("t:b", "x").incr("t:b").exec();
    assert.equal(failed[0][1], "OK");
    assert.match(String(failed[1][0]), /not an integer/);
  });

  test("an unknown command is a clean error and the connection stays usable", async () => {
    await assert.rejects(redis.call("NOSUCHCOMMAND", "x"), /unknown command 'NOSUCHCOMMAND'/);
    assert.equal(await redis.ping(), "PONG");
    assert.equal(await redis.get("foo"), "bar");
  });

  test("quit closes the connection", async () => {
    const other = new Redis(port, host);
    assert.equal(await other.ping(), "PONG");
    const ended = new Promise((resolve) => other.once("end", resolve));
    assert.equal(await other.quit(), "OK");
    await ended;
    assert.equal(other.status, "end");
  });

  for (const [name, fn] of cases) {
    await fn();
    console.log(`ok ${name}`);
  }
  redis.disconnect();
  console.log("all ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
