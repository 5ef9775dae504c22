"""The hierarchical recommendation simulator: its configuration (:mod:`.config`),
the world of users, items and true click probabilities (:mod:`.world`), logged
impressions (:mod:`.logs`), reranking requests with a known list utility
(:mod:`.lists`), and :mod:`.synthetic`, which assembles them into datasets and
array_record blocks. See docs/simulator.md for the generative model."""
