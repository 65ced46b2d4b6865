"""Prompts: reading prompt sets (suites and files) into records, and matching their words to concepts."""
