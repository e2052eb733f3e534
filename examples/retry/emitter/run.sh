#!/bin/sh
scalebox task add "should-not-arrive"
exit 7
