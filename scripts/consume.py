#!/usr/bin/env python3
"""Print every flow record dockflow stored, with redis-py only: python3 consume.py [redis://127.0.0.1:6379] [dockflow]"""
import json, sys, datetime, redis
r = redis.Redis.from_url(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379", decode_responses=True)
p = sys.argv[2] if len(sys.argv) > 2 else "dockflow"
containers = {k: json.loads(v) for k, v in r.hgetall(f"{p}:{{g}}:ctr").items()}
for part in r.zrange(f"{p}:{{g}}:parts", 0, -1):  # partitions in time order
    for _id, f in r.xrange(f"{p}:{{{part}}}:s"):
        t = datetime.datetime.fromtimestamp(int(f["t"]) / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds")
        name = containers.get(f["ci"], {}).get("name", f["ci"])
        print(t, f["d"], f["pr"], f"{f['sa']}:{f['sp']} -> {f['da']}:{f['dp']}", f"container={name} country={f['cc']} as={f['as']}")
