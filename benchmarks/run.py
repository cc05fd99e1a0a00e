"""``make bench``: every benchmark, one after the other, on this machine."""

from benchmarks import triton_embed

if __name__ == "__main__":
    triton_embed.run()
