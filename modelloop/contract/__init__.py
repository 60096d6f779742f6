"""The ground floor: what every part of modelloop agrees on, and nothing else.

Settings shared by every entry point (`settings`), the registry's tag and alias names (`registry`), the
reference profile (`profile`), the prediction-log schema and store (`predlog`), the error hierarchy
(`errors`), logging set-up (`logs`) and the wire between callers and scoring servers (`wire`: the generated
Open Inference Protocol stubs). Imports none of the parts above it (import-linter's `layers` contract).
"""
