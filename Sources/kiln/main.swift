// The `kiln` command: everything it does lives in KilnCLI and the layers below it.
import KilnCLI

await KilnCommand.runFromCommandLine()
