# The sealtune operator's Vault (OpenBao) policy. Bind it to a Kubernetes-auth role for the
# operator's ServiceAccount, e.g.:
#   vault policy write sealtune-operator sealtune-operator.hcl
#   vault write auth/kubernetes/role/sealtune-operator \
#     bound_service_account_names=sealtune-operator bound_service_account_namespaces=sealtune-system \
#     audience=vault token_policies=sealtune-operator token_ttl=1h
# Mount paths below are the defaults (auth "kubernetes", KV v2 "secret", transit "transit");
# change them where your Vault differs, and add a transit block per domain transit mount.
#
# Every per-job object is named sealtune-job-*. The operator can write such policies and roles,
# and so can grant a job's pods whatever a policy may name: treat this policy as you would a
# Vault admin's, and keep the sealtune-job- prefix for sealtune alone.

# Each job's policy: exactly its declared secret paths and its data keys.
path "sys/policies/acl/sealtune-job-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Each job's Kubernetes-auth role, bound to its ServiceAccount, namespace and audience. Its
# tokens may carry one sealtune-job-* policy besides default, never another: token_policies must
# be a string (Vault matches "sealtune-job-*" against strings only, so a list is refused) without
# a comma (Vault would split it into several). Parameters not listed are refused, among them
# "policies" (the legacy alias of token_policies), token_type, token_period and token_num_uses.
path "auth/kubernetes/role/sealtune-job-*" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "token_policies" = ["sealtune-job-*"]
    "bound_service_account_names" = []
    "bound_service_account_namespaces" = []
    "audience" = []
    "token_ttl" = []
    "token_max_ttl" = []
    "token_no_default_policy" = []
  }
  denied_parameters = {
    "token_policies" = ["*,*"]
  }
}

# Each job's transit key (and its config, to allow deleting it: crypto-shredding).
path "transit/keys/sealtune-job-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# A job's data key, wrapped only: the operator never sees the plaintext.
path "transit/datakey/wrapped/sealtune-job-*" {
  capabilities = ["update"]
}

# Checking that a declared secret exists, through its KV v2 metadata: never its value.
path "secret/metadata/*" {
  capabilities = ["read"]
}

# Signing artifacts and receipts with the operator's key; the private key stays in Vault.
path "transit/sign/sealtune-signing" {
  capabilities = ["update"]
}
path "transit/sign/sealtune-signing/*" {
  capabilities = ["update"]
}
path "transit/keys/sealtune-signing" {
  capabilities = ["read"]
}

# Proving a job's key is gone (the check in its deletion receipt): decrypting this fixed,
# meaningless ciphertext answers "encryption key not found" once the key is deleted, and
# "message authentication failed" while it exists. allowed_parameters pins the ciphertext, so
# the operator can never unwrap a job's real data key.
path "transit/decrypt/sealtune-job-*" {
  capabilities = ["update"]
  allowed_parameters = {
    "ciphertext" = ["vault:v1:c2VhbHR1bmUgc2hyZWQgcHJvb2Y="]
  }
}
