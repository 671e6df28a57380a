from mbpo_bench.cli.main import run

run()
