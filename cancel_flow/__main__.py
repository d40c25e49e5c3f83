from cancel_flow.cli import main

main()
