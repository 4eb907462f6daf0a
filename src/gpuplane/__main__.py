from gpuplane.cli.main import main

main()
