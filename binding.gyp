{
  "targets": [
    {
      "target_name": "phasemap_blas",
      "sources": ["worker/trainer/native/blas.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-ldl"]
    }
  ]
}
