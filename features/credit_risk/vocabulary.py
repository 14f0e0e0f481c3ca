"""The credit-risk dataset's category lists: shared by the generator, the transforms and the
on-demand features (which also run in the serving environment: standard library only)."""

REGIONS = ["north", "south", "east", "west", "central"]
HOME = ["rent", "own", "mortgage"]
MERCHANTS = [
    "grocery",
    "restaurants",
    "utilities",
    "travel",
    "electronics",
    "gambling",
    "cash_advance",
]
RISKY_MERCHANTS = ["gambling", "cash_advance"]
PURPOSES = ["debt_consolidation", "home_improvement", "car", "education", "medical", "other"]
