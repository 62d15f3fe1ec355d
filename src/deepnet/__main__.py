from deepnet.cli import main

main()
