"""redis-py against a redis-protocol server, used as redis-py's README shows it (defaults:
no protocol or other overrides). Usage: python3 redis_py.py HOST PORT. Prints one line per
case and exits non-zero on the first failure."""

import os
import sys
import threading
import time

import redis

HOST, PORT = sys.argv[1], int(sys.argv[2])


def case(name):
    def wrap(fn):
        fn()
        print(f"ok {name}", flush=True)
        return fn

    return wrap


r = redis.Redis(host=HOST, port=PORT, decode_responses=True)


@case("connect")
def _():
    assert r.ping() is True
    # The default protocol of this redis-py, which the server was spoken to in.
    hello = r.execute_command("HELLO")
    print(f"   redis-py {redis.__version__}, protocol {hello['proto'] if isinstance(hello, dict) else hello}")


@case("set and get")
def _():
    assert r.set("foo", "bar") is True
    assert r.get("foo") == "bar"
    assert r.get("missing") is None


@case("string and key commands")
def _():
    r.delete("n", "f", "s", "s:1", "s:2", "s:3")
    assert r.incr("n") == 1
    assert r.incrby("n", 10) == 11
    assert r.decr("n") == 10
    assert r.decrby("n", 3) == 7
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.append("s", "ab") == 2 and r.append("s", "cd") == 4
    assert r.strlen("s") == 4
    assert r.getdel("s") == "abcd" and r.get("s") is None
    assert r.setnx("s", "1") is True and r.setnx("s", "2") is False
    assert r.mset({"s:1": "a", "s:2": "b", "s:3": "c"}) is True
    assert r.msetnx({"s:1": "x", "s:9": "y"}) is False
    assert r.mget("s:1", "s:2", "nope") == ["a", "b", None]
    assert r.type("s:1") == "string" and r.type("nope") == "none"
    assert sorted(r.keys("s:*")) == ["s:1", "s:2", "s:3"]
    assert sorted(r.scan_iter(match="s:*", count=2)) == ["s:1", "s:2", "s:3"]
    assert r.set("s:1", "z", get=True) == "a"
    assert r.set("s:1", "w", nx=True) is None
    assert r.exists("s:1", "s:2", "nope") == 2
    try:
        r.incr("s:1")
        raise AssertionError("INCR of a non-number succeeded")
    except redis.ResponseError as e:
        assert "not an integer" in str(e), e
    assert r.execute_command("SELECT", 0) in (True, "OK")
    info = r.info()
    assert "redis_version" in info and info["redis_mode"] == "standalone", info
    assert r.client_setname("suite") is True and r.client_getname() == "suite"
    assert r.echo("hi") == "hi"


@case("pipeline of 3000 commands, answers in order")
def _():
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"p:{i}", i)
        pipe.get(f"p:{i}")
        pipe.incr("p:counter")
    r.delete("p:counter")
    replies = pipe.execute()
    assert len(replies) == 3000
    for i in range(1000):
        assert replies[3 * i] is True, (i, replies[3 * i])
        assert replies[3 * i + 1] == str(i), (i, replies[3 * i + 1])
        assert replies[3 * i + 2] == i + 1, (i, replies[3 * i + 2])


@case("binary-safe keys and values")
def _():
    b = redis.Redis(host=HOST, port=PORT)
    every_byte = bytes(range(256))
    for key, value in [
        (b"k\r\n\x00" + every_byte, every_byte * 3 + b"\r\n\x00"),
        (b"\r\n", b"\x00"),
        (b"\x00", b"\r\n*1\r\n$4\r\nPING\r\n"),
        (every_byte, b""),
    ]:
        assert b.set(key, value) is True
        assert b.get(key) == value, key
    assert b.get(b"k\r\n\x00") is None
    b.close()


@case("a 1 MiB value")
def _():
    b = redis.Redis(host=HOST, port=PORT)
    value = os.urandom(1 << 20)
    assert b.set("big", value) is True
    assert b.get("big") == value
    assert b.strlen("big") == 1 << 20
    b.close()


@case("32 concurrent connections from one pool")
def _():
    pool = redis.ConnectionPool(host=HOST, port=PORT, max_connections=32, decode_responses=True)
    # Each client holds one of the pool's connections while it lives.
    clients = [redis.Redis(connection_pool=pool, single_connection_client=True) for _ in range(32)]
    r.delete("c:counter")
    start = threading.Barrier(32)
    errors = []

    def work(i, c):
        try:
            start.wait(timeout=30)
            for j in range(100):
                c.incr("c:counter")
                assert c.set(f"c:{i}", j) is True
                assert c.get(f"c:{i}") == str(j)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert r.get("c:counter") == "3200"
    assert r.info("clients")["connected_clients"] >= 33
    for c in clients:
        c.close()
    pool.disconnect()


@case("expiry")
def _():
    assert r.set("e:1", "v", ex=100) is True
    assert 99 <= r.ttl("e:1") <= 100
    assert 0 < r.pttl("e:1") <= 100_000
    assert r.persist("e:1") is True and r.ttl("e:1") == -1
    assert r.expire("e:1", 50) is True and 49 <= r.ttl("e:1") <= 50
    assert r.getex("e:1", persist=True) == "v" and r.ttl("e:1") == -1
    assert r.ttl("e:missing") == -2
    assert r.set("e:2", "v") and r.pexpireat("e:2", int(time.time() * 1000) - 1000) is True
    assert r.get("e:2") is None
    assert r.set("e:3", "v", px=20) is True
    deadline = time.monotonic() + 5
    while r.exists("e:3") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert r.get("e:3") is None, "e:3 did not expire"


@case("a transaction")
def _():
    r.delete("t:a")
    pipe = r.pipeline()  # transaction=True: MULTI ... EXEC
    pipe.set("t:a", 1).incr("t:a").incrby("t:a", 5).get("t:a")
    assert pipe.execute() == [True, 2, 7, "7"]
    pipe = r.pipeline()
    pipe.set("t:b", "x").incr("t:b")
    try:
        pipe.execute()
        raise AssertionError("a failing command in EXEC raised nothing")
    except redis.ResponseError as e:
        assert "not an integer" in str(e), e
    assert r.get("t:b") == "x"


@case("an unknown command is a clean error and the connection stays usable")
def _():
    try:
        r.execute_command("NOSUCHCOMMAND", "x")
        raise AssertionError("no error")
    except redis.ResponseError as e:
        assert str(e).startswith("unknown command 'NOSUCHCOMMAND'"), str(e)
    assert r.ping() is True
    assert r.get("foo") == "bar"

print("all ok", flush=True)
