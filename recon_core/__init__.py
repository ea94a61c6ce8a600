"""asr-recon attack engine: the client, the gradient it shares, and the attack that inverts it."""
