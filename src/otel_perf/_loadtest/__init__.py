"""``otel-perf loadtest``: scenarios, the Locust runner, results, gates and run tagging.

Modules: :mod:`.scenario` (YAML scenarios and Locust files), :mod:`.runner` (Locust as a
library -- the only module that imports Locust), :mod:`.results` (per-endpoint and
per-second numbers), :mod:`.server` (the server's view: stats endpoint or Prometheus),
:mod:`.gates` (budget checks) and :mod:`.tagging` (baggage and trace ids).  Importing this
package imports nothing heavy.
"""
