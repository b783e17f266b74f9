"""The shared test kit: what the tests and the benchmarks both stand on — a live server,
scripted engines, speech and media made here, a loopback coturn and an aiortc student, a
headless browser, and a server that speaks Ollama's API. It imports only the product."""
