"""Where things appear inside a trainer pod. The trainer's config refers to these paths."""
# ruff: noqa: S105, S108  (paths, not passwords or host temp files)

CONFIG_DIR = "/var/run/sealtune/config"
CONFIG_FILE = "trainer.json"
DATA_DIR = "/var/run/sealtune/data"
MODEL_DIR = "/var/run/sealtune/model"
OUTPUT_DIR = "/var/run/sealtune/output"
SECRETS_DIR = "/var/run/sealtune/secrets"
VAULT_TOKEN_DIR = "/var/run/secrets/sealtune.dev/vault"
SCRATCH_DIR = "/tmp"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
