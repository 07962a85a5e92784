"""The library's fixed numbers and names, one home each (this module imports nothing).

Time: a day has :data:`N_SLOTS` half-hour slots; the gap since the previous stay of a window is
counted in half-hour slots and clamped to ``N_GAPS - 1`` (two days or more); days of the week
are ``1..7`` with 0 for padding (:data:`N_DOWS` values). Tokens: :data:`PAD` is the location id
of padding, :data:`IGNORE_INDEX` the target of positions without one (PyTorch's default
``ignore_index``). Grid cells: indices lie within ``-MAX_CELL_INDEX..MAX_CELL_INDEX`` so that
a cell is keyed as two 31-bit halves of one int64. Popularity: a cell's rank falls in one of the
bins ``1 .. len(POPULARITY_EDGES) + 1``, 0 is padding or unknown (:data:`N_RANKS` values).
"""

#: Half-hour slots per day (``slot`` takes values ``0 .. N_SLOTS - 1``).
N_SLOTS = 48
#: Day-of-week vocabulary: 1..7 are Monday..Sunday, 0 is padding.
N_DOWS = 8
#: Gap classes since the previous stay: half-hour slots, clamped to 95 (two days or more).
N_GAPS = 96
#: Location id of padding tokens.
PAD = -1
#: Target value of positions without a target (last position, padding, out of vocabulary).
IGNORE_INDEX = -100
#: Evaluation protocols: every position of a window, or only its last target.
PROTOCOLS = ("all", "last")
#: Largest magnitude of a grid cell index (cells are keyed as two 31-bit halves of an int64).
MAX_CELL_INDEX = 2**30
#: Bits of the lower half of a cell key.
CELL_KEY_BITS = 31
#: Per-token input features of a window, as fed to the networks.
TOKEN_FEATURES = ("location", "slot", "dow", "gap")
#: Categories of the shared POI taxonomy (``len(trajmoe.taxonomy.TAXONOMY)``): the POI features of a cell.
N_CATEGORIES = 34
#: Per-token targets of a window: the next token's location and gap.
TOKEN_TARGETS = ("next_location", "next_gap")
#: Upper edges of the popularity rank bins (share of the cells ranked above),
#: docs/method.rst, "Location features": top 1 %, 1-5 %, ..., 60-80 %, the rest.
POPULARITY_EDGES = (0.01, 0.05, 0.10, 0.20, 0.40, 0.60, 0.80)
#: Popularity vocabulary: the rank bins 1..8 and 0 (padding / unknown, used by the OOV row).
N_RANKS = len(POPULARITY_EDGES) + 2
