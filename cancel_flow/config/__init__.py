"""The coach's configuration: brand, rules, offers, experiments, emails, alerts.

schema.py    what a configuration holds (frozen dataclasses the rest of the service reads)
validate.py  the ONE validator: a TOML/JSON document in, a Configuration or an InvalidConfig naming the field out
toml.py      TOML in and out (`offers.toml`, `config export` / `config import`); nothing else parses TOML
live.py      the live version: seeded from the file once, then read from the database's numbered versions
"""
