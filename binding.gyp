{
  "targets": [
    {
      "target_name": "udp_batch",
      "sources": ["src/receive/native/udp_batch.c"],
      "conditions": [["OS!='linux'", {"type": "none"}]],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
