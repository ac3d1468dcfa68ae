"""Stage two's commands: `commands.register` adds them to the root `llmseg` app; `engine` (`data`, `score`,
`evaluate`), `segment`, `compare`, `tune` declare them and `options` holds the option declarations they share.

Each command module imports its heavy dependencies (torch, the engine) inside the command, so `--help` stays fast.
"""
