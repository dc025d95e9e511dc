-- The keyring of access-token (JWT, ES256) signing keys, shared by the fleet. A key is
-- published from its creation, signs from not_before, stops signing at retired_at and is
-- deleted once every token it signed has expired. Changes take the next registry revision,
-- so every instance reloads the keyring within a poll.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    -- The PKCS#8 private key sealed with the data key, bound to the kid.
    sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    retired_at BIGINT
);
