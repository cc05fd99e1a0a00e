"""``make bench``: every benchmark, one after the other, on this machine; results in benchmarks/results/."""

from benchmarks import gateway_search, triton_embed

if __name__ == "__main__":
    triton_embed.run()
    gateway_search.run()
