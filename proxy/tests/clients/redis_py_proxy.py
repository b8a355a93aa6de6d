"""redis-py through sheave-proxy's RESP listener (sharded: what a proxy can serve), in RESP2
and RESP3. Usage: python3 redis_py_proxy.py HOST PORT. Writes user:0..299 = its number (the
test then finds each key on the shard it hashes to). Prints one line per case and "all ok"
last; exits non-zero on the first failure."""

import sys

import redis

HOST, PORT = sys.argv[1], int(sys.argv[2])


def case(name):
    def wrap(fn):
        fn()
        print(f"ok {name}", flush=True)
        return fn

    return wrap


for protocol in (2, 3):
    r = redis.Redis(host=HOST, port=PORT, decode_responses=True, protocol=protocol)

    @case(f"resp{protocol}: ping")
    def _():
        assert r.ping() is True

    @case(f"resp{protocol}: set and get 300 keys")
    def _():
        for i in range(300):
            assert r.set(f"user:{i}", str(i)) is True
        for i in range(300):
            assert r.get(f"user:{i}") == str(i), i
        assert r.get("user:none") is None

    @case(f"resp{protocol}: a pipeline of 1000 commands")
    def _():
        p = r.pipeline(transaction=False)
        for i in range(500):
            p.set(f"pipe:{i}", str(i))
            p.get(f"pipe:{i}")
        out = p.execute()
        assert len(out) == 1000
        for i in range(500):
            assert out[2 * i] is True and out[2 * i + 1] == str(i), i

    @case(f"resp{protocol}: mget, mset, exists, delete across shards")
    def _():
        keys = [f"user:{i}" for i in range(0, 300, 7)]
        assert r.mget(keys + ["user:none"]) == [k.split(":")[1] for k in keys] + [None]
        assert r.mset({f"m:{i}": str(i) for i in range(40)}) is True
        assert r.mget([f"m:{i}" for i in range(40)]) == [str(i) for i in range(40)]
        assert r.exists(*[f"m:{i}" for i in range(40)], "m:none") == 40
        assert r.delete(*[f"m:{i}" for i in range(40)]) == 40
        assert r.exists(*[f"m:{i}" for i in range(40)]) == 0

    @case(f"resp{protocol}: a command that cannot be proxied is a clean error")
    def _():
        try:
            r.keys("*")
        except redis.ResponseError as e:
            assert "KEYS" in str(e).upper(), e
        else:
            raise AssertionError("KEYS was not refused")
        assert r.ping() is True  # the connection is still good

    r.close()

print("all ok", flush=True)
