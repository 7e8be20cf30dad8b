"""Provider webhook calls for tests: the documented payloads (:mod:`.payloads`) and
signers with keys made in the test (:mod:`.signing`)."""
