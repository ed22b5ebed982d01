"""The service edge: the command line (cli), the Daemon that builds and runs every part (app), --detach
(detach), sd_notify (notify), config reloads (reload) and the exit codes (exitcodes). The top: may
import every layer; nothing imports it but tabfleetd.__main__.
"""
