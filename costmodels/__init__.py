"""Pure cost models: (model, hardware, shape, load) -> time, memory, bytes.  Imports only hardware."""
