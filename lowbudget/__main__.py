from lowbudget.cli import main

main()
