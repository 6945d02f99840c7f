"""What the process runs on: jax.distributed, the device mesh and sharding, the compilation cache, the allocator."""
