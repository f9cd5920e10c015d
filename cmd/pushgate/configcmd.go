package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"pushgate/internal/config"
)

const configUsage = `Usage: pushgate config print [flags]

Prints the settings pushgate would run with (the defaults, then the --config
file, then the PUSHGATE_* variables, then the flags given) as YAML that
--config loads again: numbers and booleans bare, everything else as strings,
and --jwt-secret, --api-keys, --admin-password and the password in
--redis-url masked.

It takes every flag pushgate takes (pushgate --help lists them), e.g.
  pushgate config print --engine redis --heartbeat-interval 15s
`

// runConfig is "pushgate config": print, or its help.
func runConfig(args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("config needs a subcommand: pushgate config print [flags] (see pushgate config --help)")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, configUsage)
		return flag.ErrHelp
	case "print":
		_, fs, err := config.Load(args[1:], getenv, io.Discard)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, configUsage)
		}
		if err != nil {
			return err
		}
		return config.Print(fs, stdout)
	}
	return fmt.Errorf("unknown config subcommand %q: pushgate config print [flags] (see pushgate config --help)", args[0])
}
