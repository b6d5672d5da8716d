"""Runs Trove's docker-hostnic plugin exactly as its `trove-docker-plugin` entry point does
(trove/cmd/network_driver.py: main() -> StandaloneApplication(app, {bind, workers: 1}).run()),
only bound to the socket given on the command line instead of /run/docker/docker-hostnic.sock.

usage: trove_plugin.py SOCKET
"""
import sys

from trove.cmd import network_driver


def main():
    options = {"bind": "unix:" + sys.argv[1], "workers": 1}
    network_driver.StandaloneApplication(network_driver.app, options).run()


if __name__ == "__main__":
    main()
