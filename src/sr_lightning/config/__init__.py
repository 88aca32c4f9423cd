"""From config to objects: the ``${sr_...:}`` resolvers, the rules that rewrite a config before
a run (one function each), the unknown-key check, and the builders of a run's objects."""
