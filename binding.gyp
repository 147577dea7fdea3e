{
  "targets": [
    {
      "target_name": "phasemap_native",
      "sources": [
        "worker/trainer/native/blas.c",
        "worker/trainer/native/streams.c",
        "worker/trainer/native/streams_napi.c"
      ],
      "cflags": ["-O3", "-ffp-contract=off", "-Wall"],
      "libraries": ["-ldl"]
    }
  ]
}
