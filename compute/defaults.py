"""The defaults of what runs on workers, in a module that imports nothing heavy: the API
reads them (backend/core/settings.py) without loading numba or the image codecs.
"""

MiB = 2**20

# 64 MiB, from measurements (docs/benchmarks.md): a job's time is flat from 32 MiB blocks
# up (a block is ~50 ms of reading and parsing; the ~1.5 ms each task costs is noise)
# and grows below; a 5 GiB file still makes 80 tasks to spread over a cluster; a worker
# thread holds about one block.
DEFAULT_BLOCK_BYTES = 64 * MiB
# Longer numbers are refused (compute.errors.NumberTooLong): a block reads at most this far
# past its end to finish its last number, and Python takes about a second (holding the
# GIL) to turn 1 MiB of digits into an int, and 4 MiB about 7 s (it grows as n**1.5).
MAX_TOKEN_BYTES = 1 * MiB
# Larger images are refused (decompression bombs); 64 MP is an 8000 x 8000 photo.
DEFAULT_MAX_PIXELS = 64_000_000
# Pillow's own limit (PIL.Image.MAX_IMAGE_PIXELS): above it, it warns process-wide. Ours
# stays at or under it and is checked first, so Pillow never sees an image it would warn about.
PILLOW_MAX_PIXELS = 89_478_485
# The original service's tile size.
DEFAULT_BLOCK_PX = 60

# Worker resources that make two pools (compute/preload.py, `spacetime up`, compose):
# block tasks need a "bulk" slot, image tasks an "interactive" one, where workers offer them.
BULK_RESOURCE = "bulk"
INTERACTIVE_RESOURCE = "interactive"

# A block in an object store is read as ranged GETs (compute/ranged.py). AWS recommends
# 8-16 MB; 8 MiB parts make 8 requests of a 64 MiB block.
S3_PART_BYTES = 8 * MiB
# GETs in flight per block task: at ~100 MB/s a stream (S3), 8 make 6-7 Gbit/s for a
# worker thread; beyond that the instance's network or the parse is the limit.
S3_CONCURRENCY = 8
# Workers sample their threads every 10 ms: a job whose tasks computed for less than this
# has a handful of samples of its own among the other jobs' of the same window, so its
# report goes without the profile (compute/report.py, settings.report_profile_min_s).
PROFILE_MIN_COMPUTE_S = 0.1
